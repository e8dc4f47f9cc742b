"""`MegaMaskedLM`: Mega with HF `MegaForMaskedLM`'s head."""

import keras
from keras_hub.models import MaskedLM

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_lm_head import MegaLMHead
from keras_mega.models.mega_masked_lm_preprocessor import (
    MegaMaskedLMPreprocessor,
)
from keras_mega.models.mega_task import MegaTask
from keras_mega.models.mega_task_utils import task_inputs


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaMaskedLM(MegaTask, MaskedLM):
    """Mega for masked language modeling.

    Predicts the original tokens at `mask_positions` with HF
    `MegaForMaskedLM`'s head: an optional dense + tanh layer, then a
    projection to the vocabulary (tied to the token embedding by default)
    plus a bias. With a `MegaMaskedLMPreprocessor`, `fit()` takes raw
    strings and masks them dynamically.

    Inputs: `token_ids`, `padding_mask` (`[batch, length]`) and
    `mask_positions` (`[batch, num_positions]`). Output: logits
    `[batch, num_positions, vocabulary_size]`.

    Args:
        backbone: a `MegaBackbone` (bidirectional, not causal, for MLM).
        preprocessor: a `MegaMaskedLMPreprocessor` or `None`.
        use_hidden_dense: bool. HF's `add_lm_hidden_dense_layer`.
        tie_weights: bool. Project with the transposed token embedding
            (HF `tie_word_embeddings`, the default) instead of an own kernel.

    Examples:
    ```python
    # An HF MegaForMaskedLM checkpoint directory, e.g. mega-base-wikitext.
    masked_lm = keras_mega.models.MegaMaskedLM.from_preset("path/to/hf_mega")
    masked_lm.fit(["The quick brown fox jumped.", "Call me Ishmael."])

    # Preprocessed inputs.
    masked_lm = keras_mega.models.MegaMaskedLM.from_preset(
        "path/to/hf_mega", preprocessor=None
    )
    logits = masked_lm.predict({
        "token_ids": np.array([[0, 133, 50264, 2]]),
        "padding_mask": np.array([[1, 1, 1, 1]]),
        "mask_positions": np.array([[2]]),
    })

    # A custom model.
    backbone = keras_mega.models.MegaBackbone(
        vocabulary_size=1000, num_layers=2, hidden_dim=64,
        intermediate_dim=128, shared_dim=32, ema_dim=8,
    )
    masked_lm = keras_mega.models.MegaMaskedLM(backbone)
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaMaskedLMPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        use_hidden_dense=True,
        tie_weights=True,
        **kwargs,
    ):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = MegaLMHead.for_backbone(
            backbone, use_hidden_dense, tie_weights, name="mlm_head"
        )

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        inputs["mask_positions"] = keras.Input(
            shape=(None,), dtype="int32", name="mask_positions"
        )
        sequence_output = backbone(backbone_inputs)
        outputs = self.lm_head(sequence_output, inputs["mask_positions"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.use_hidden_dense = use_hidden_dense
        self.tie_weights = tie_weights
