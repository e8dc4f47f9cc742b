"""`MegaCausalLM`: Mega with HF `MegaForCausalLM`'s head."""

import keras
from keras_hub.models import CausalLM

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_causal_lm_preprocessor import (
    MegaCausalLMPreprocessor,
)
from keras_mega.models.mega_lm_head import MegaLMHead
from keras_mega.models.mega_task_utils import check_vocabulary
from keras_mega.models.mega_task_utils import kernel_initializer
from keras_mega.models.mega_task_utils import task_inputs


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCausalLM(CausalLM):
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
    `generate()` is not available yet (it needs Mega's recurrent cache).

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
        self.lm_head = MegaLMHead(
            vocabulary_size=backbone.vocabulary_size,
            hidden_dim=backbone.hidden_dim,
            use_hidden_dense=use_hidden_dense,
            token_embedding=backbone.token_embedding if tie_weights else None,
            kernel_initializer=kernel_initializer(backbone),
            dtype=backbone.dtype_policy,
            name="lm_head",
        )

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        outputs = self.lm_head(backbone(backbone_inputs))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.use_hidden_dense = use_hidden_dense
        self.tie_weights = tie_weights

    def generate_step(self, inputs, stop_token_ids=None):
        raise NotImplementedError(
            "MegaCausalLM.generate() is not implemented yet: it needs Mega's "
            "recurrent (EMA state) cache."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "use_hidden_dense": self.use_hidden_dense,
                "tie_weights": self.tie_weights,
            }
        )
        return config
