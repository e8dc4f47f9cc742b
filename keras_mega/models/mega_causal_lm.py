"""`MegaCausalLM`: Mega with HF `MegaForCausalLM`'s head."""

import keras
from keras import ops
from keras_hub.models import CausalLM

from keras_mega.keras_hub_compat import any_equal
from keras_mega.models import mega_prefix_decoding as prefix_decoding
from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_causal_lm_preprocessor import (
    MegaCausalLMPreprocessor,
)
from keras_mega.models.mega_lm_head import MegaLMHead
from keras_mega.models.mega_task import MegaTask
from keras_mega.models.mega_task_utils import task_inputs


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCausalLM(MegaTask, CausalLM):
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
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = MegaLMHead.for_backbone(
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

        With `"state_tokens"` in `inputs`, it computes a prefix state
        instead (`mega_prefix_decoding.state_step`), so that `prefill_state()` runs through
        the same compiled function as generation.
        """
        if "state_tokens" in inputs:
            return prefix_decoding.state_step(self.backbone, inputs)
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        hidden_states = None
        if "prefix_cache" in inputs:  # From `generate(prefix_state=...)`.
            cache, offset, index = prefix_decoding.step_start(inputs)
        else:
            hidden_states, cache = self._build_cache(token_ids, padding_mask)
            lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
            index = ops.min(lengths)
            offset = 0

        def next(prompt, cache, index):
            position = index - 1
            batch_size = ops.shape(prompt)[0]
            prompt = ops.slice(prompt, [0, position], [batch_size, 1])
            logits, hidden, cache = self.call_with_cache(
                prompt, cache, offset + position
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

    # --- Reusable prefix state (`mega_prefix_decoding`) ---

    def prefill_state(self, prefix, max_length=None, prefix_state=None):
        """Reads a shared prefix once, for many continuations.

        Returns a `MegaPrefixState`: per layer the EMA state and one chunk
        of keys/values (all of them without chunking), which
        `generate(..., prefix_state=state)` and
        `score(..., prefix_state=state)` continue from, and which
        `state.save(path)` writes to disk.

        Args:
            prefix: int token ids `[B, P]` (or `[P]`), a dict with
                `"token_ids"` (and an all-ones `"padding_mask"`), or, with a
                preprocessor, a string or list of strings (tokenized with
                the start token, no end token) of equal token counts. Every
                row has `P >= 1` real tokens.
            max_length: int. Without chunking, the positions (prefix plus
                continuation) the state must serve; defaults to the
                backbone's `max_sequence_length`. Ignored with chunking,
                where any length works in constant memory.
            prefix_state: a `MegaPrefixState` that `prefix` extends (e.g. a
                conversation's next turn); the result covers both.

        Example:
        ```python
        state = causal_lm.prefill_state(document_ids).repeat(16)
        answers = causal_lm.generate(
            {"token_ids": questions, "padding_mask": questions_mask},
            stop_token_ids=None,
            prefix_state=state,
        )
        ```
        """
        return prefix_decoding.prefill_state(
            self, prefix, max_length, prefix_state
        )

    def generate(
        self,
        inputs,
        max_length=None,
        stop_token_ids="auto",
        strip_prompt=False,
        prefix_state=None,
    ):
        """keras-hub's `generate()`, and continuing from a prefix state.

        With `prefix_state` (from `prefill_state()`), `inputs` are the
        continuations of the prefix (a dict with right-padded `token_ids`
        and `padding_mask` `[B, L]`, or strings with a preprocessor, then
        tokenized without a start token) and the output holds the
        continuations and the generated tokens, as if the prefix had been
        prepended to every prompt, without reading it again. The tokens all
        continuations share are fed in one block; generation is compiled
        as keras-hub's is (JAX, TensorFlow), the state being an argument of
        the compiled function. Contrastive search is not available from a
        prefix state (it needs the prefix's hidden states).
        """
        if prefix_state is None:
            return super().generate(
                inputs,
                max_length=max_length,
                stop_token_ids=stop_token_ids,
                strip_prompt=strip_prompt,
            )
        return prefix_decoding.generate(
            self,
            inputs,
            max_length=max_length,
            stop_token_ids=stop_token_ids,
            strip_prompt=strip_prompt,
            prefix_state=prefix_state,
        )

    def score(
        self,
        token_ids,
        padding_mask=None,
        scoring_mode="logits",
        layer_intercept_fn=None,
        target_ids=None,
        prefix_state=None,
    ):
        """Scores token ids, optionally as continuations of a prefix state.

        keras-hub's `score()` (as on `GPT2CausalLM`), plus `prefix_state`.

        Args:
            token_ids: int `[B, L]`.
            padding_mask: `[B, L]`, 1 = real token (right-padded); defaults
                to all ones.
            scoring_mode: `"logits"`: `[B, L, vocab]`, position `t`
                predicting token `t + 1`; `"loss"`: the per-token
                cross-entropy `[B, L]` against `target_ids`; `"log_probs"`
                (needs `prefix_state`): `[B, L]`, the log-probability of
                each token given the prefix and the tokens before it, 0 at
                padding.
            layer_intercept_fn: `fn(x, i)` applied to the embeddings
                (`i = -1`) and to each block's output (`i = 0, 1, ...`).
            target_ids: int `[B, L]`, for `"loss"`.
            prefix_state: a `MegaPrefixState`: `token_ids` continue its
                prefix, and the result equals scoring prefix + tokens in
                one go at the tokens' positions.
        """
        if scoring_mode not in ("logits", "loss", "log_probs"):
            raise ValueError(
                "scoring_mode must be 'logits', 'loss' or 'log_probs'; got "
                f"{scoring_mode!r}."
            )
        if scoring_mode == "loss" and target_ids is None:
            raise ValueError(
                "scoring_mode='loss' needs target_ids (e.g. the token ids "
                "shifted left by one)."
            )
        if scoring_mode == "log_probs" and prefix_state is None:
            raise ValueError(
                "scoring_mode='log_probs' needs a prefix_state: the first "
                "token has no prediction otherwise. Use 'loss' with "
                "target_ids, or prefill the first token(s) as the prefix."
            )
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        if padding_mask is None:
            padding_mask = ops.ones((batch_size, length), "int32")
        padding_mask = ops.convert_to_tensor(padding_mask)
        if layer_intercept_fn is None:

            def layer_intercept_fn(x, unused_i):
                return x

        if prefix_state is None:
            x = layer_intercept_fn(self.backbone.embed(token_ids), -1)
            for i, block in enumerate(self.backbone.mega_layers):
                x, *_ = block(
                    x,
                    padding_mask=padding_mask,
                    return_attention_scores=True,
                )
                x = layer_intercept_fn(x, i)
            logits = self.lm_head(x)
        else:
            logits = prefix_decoding.score_logits(
                self,
                token_ids,
                padding_mask,
                layer_intercept_fn,
                prefix_state,
                log_probs=scoring_mode == "log_probs",
            )
            if scoring_mode == "log_probs":
                return logits
        if scoring_mode == "logits":
            return logits
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        return loss(target_ids, logits)
