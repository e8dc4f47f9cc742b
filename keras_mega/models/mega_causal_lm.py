"""`MegaCausalLM`: Mega with HF `MegaForCausalLM`'s head."""

import keras
from keras import ops
from keras_hub.models import CausalLM

from keras_mega.convert.keras_hub_compat import any_equal
from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_causal_lm_preprocessor import (
    MegaCausalLMPreprocessor,
)
from keras_mega.models.mega_task_utils import MegaLMTaskMixin
from keras_mega.models.mega_task_utils import check_vocabulary
from keras_mega.models.mega_task_utils import task_inputs


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCausalLM(MegaLMTaskMixin, CausalLM):
    """Mega for causal (next token) language modeling.

    HF `MegaForCausalLM`'s head on a causal Mega backbone: an optional
    dense + tanh layer (HF `add_lm_hidden_dense_layer`), then a projection
    to the vocabulary (tied to the token embedding by default) plus a bias.
    With a `MegaCausalLMPreprocessor`, `fit()` takes raw strings.

    Inputs: `token_ids`, `padding_mask` (`[batch, length]`). Output: logits
    `[batch, length, vocabulary_size]`, position `t` predicting token
    `t + 1`.

    The backbone must be causal: `causal=True` and `bidirectional=False`
    (HF `is_decoder=True`, `bidirectional=False`); otherwise every position
    would see the tokens it predicts, and this raises a `ValueError`.
    `generate()` decodes with Mega's recurrent cache: per layer the EMA state
    and one chunk of keys/values (the whole length without chunking), so
    with `chunk_size` memory does not grow with the generated length. The
    prompt is prefilled in one parallel forward. Any keras-hub sampler
    works ("greedy", "top_k", "top_p", "beam", ...).

    Args:
        backbone: a causal `MegaBackbone`.
        preprocessor: a `MegaCausalLMPreprocessor` or `None`.
        use_hidden_dense: bool. HF's `add_lm_hidden_dense_layer`.
        tie_weights: bool. Project with the transposed token embedding
            (HF `tie_word_embeddings`, the default) instead of an own kernel.

    Examples:
    ```python
    causal_lm = keras_mega.models.MegaCausalLM.from_preset("path/to/hf_mega")
    causal_lm.fit(["The quick brown fox jumped.", "Call me Ishmael."])

    backbone = keras_mega.models.MegaBackbone(
        vocabulary_size=1000, num_layers=2, hidden_dim=64,
        intermediate_dim=128, shared_dim=32, ema_dim=8,
        bidirectional=False, causal=True, chunk_size=32,
    )
    causal_lm = keras_mega.models.MegaCausalLM(backbone)
    logits = causal_lm.predict({
        "token_ids": np.ones((2, 100), "int32"),
        "padding_mask": np.ones((2, 100), "int32"),
    })
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaCausalLMPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        use_hidden_dense=True,
        tie_weights=True,
        **kwargs,
    ):
        if not getattr(backbone, "causal", False) or getattr(
            backbone, "bidirectional", True
        ):
            raise ValueError(
                "MegaCausalLM needs a causal backbone: MegaBackbone("
                "causal=True, bidirectional=False) (HF: is_decoder=True, "
                f"bidirectional=False). Got causal={backbone.causal}, "
                f"bidirectional={backbone.bidirectional}."
            )
        check_vocabulary(backbone, preprocessor)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = self._lm_head(
            backbone, use_hidden_dense, tie_weights, name="lm_head"
        )

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        outputs = self.lm_head(backbone(backbone_inputs))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.use_hidden_dense = use_hidden_dense
        self.tie_weights = tie_weights

    # --- Generation (keras-hub's contract) ---

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Feeds `token_ids` `[B, T]` at position `cache_update_index`.

        Returns `(logits [B, T, vocab], hidden_states [B, T, hidden], cache)`,
        equal to the full forward at these positions. `T` may be more than
        one token, across chunk boundaries (streaming scoring).
        """
        hidden, cache = self.backbone.call_with_cache(
            token_ids, cache, cache_update_index
        )
        return self.lm_head(hidden), hidden, cache

    def _build_cache(self, token_ids, padding_mask):
        """Prefills the prompts in one forward; returns `(hidden, cache)`.

        keras-hub's sampler starts at `index = min(prompt lengths)` and first
        feeds the token at `index - 1` again. A KV cache would just rewrite
        that slot, but a recurrent EMA state would count the token twice, so
        the cache is the state *before* position `index - 1`.
        """
        lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        position = ops.maximum(ops.min(lengths) - 1, 0)
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        max_length = ops.shape(token_ids)[1]
        return self.backbone.prefill(inputs, position, max_length=max_length)

    def generate_step(self, inputs, stop_token_ids=None):
        """One batch of generation; compilable (JAX, TensorFlow).

        Args:
            inputs: dict with `"token_ids"` and `"padding_mask"`, prompts
                right-padded to the generation length.
            stop_token_ids: ids that end a sequence, or None.
        """
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        hidden_states, cache = self._build_cache(token_ids, padding_mask)
        lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        index = ops.min(lengths)

        def next(prompt, cache, index):
            position = index - 1
            batch_size = ops.shape(prompt)[0]
            prompt = ops.slice(prompt, [0, position], [batch_size, 1])
            logits, hidden, cache = self.call_with_cache(
                prompt, cache, position
            )
            return (
                ops.squeeze(logits, axis=1),
                ops.squeeze(hidden, axis=1),
                cache,
            )

        token_ids = self.sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        if stop_token_ids is not None:
            # Everything after the first stop token of a row is padding.
            end = any_equal(
                token_ids, stop_token_ids, ops.logical_not(padding_mask)
            )
            end = ops.cast(end, "int32")
            after = ops.cumsum(end, axis=-1) - end
            padding_mask = ops.logical_not(ops.cast(after, "bool"))
        else:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        return {"token_ids": token_ids, "padding_mask": padding_mask}
