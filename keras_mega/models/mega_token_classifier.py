"""`MegaTokenClassifier`: HF `MegaForTokenClassification`'s head."""

import keras
from keras_hub.models import Task

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_task_utils import MegaTaskMixin
from keras_mega.models.mega_task_utils import check_num_classes
from keras_mega.models.mega_task_utils import check_vocabulary
from keras_mega.models.mega_task_utils import head_dense
from keras_mega.models.mega_task_utils import head_dropout
from keras_mega.models.mega_task_utils import task_inputs
from keras_mega.models.mega_token_classifier_preprocessor import (
    MegaTokenClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTokenClassifier(MegaTaskMixin, Task):
    """Mega for token classification (e.g. named entities, tagging).

    HF `MegaForTokenClassification`'s head: dropout, then a dense layer to
    `num_classes` logits at every position. With a
    `MegaTokenClassifierPreprocessor`, `fit()` takes raw strings (or lists
    of words) and one label per word, aligned to tokens by the
    preprocessor, whose `sample_weight` leaves special tokens, padding and
    continuation pieces out of the loss.

    Inputs: `token_ids`, `padding_mask` (`[batch, length]`). Output: logits
    `[batch, length, num_classes]`.

    `compile()` defaults to Adam (learning rate 5e-5), sparse categorical
    cross-entropy (from logits unless `activation` is softmax) and sparse
    categorical accuracy as a weighted metric, counted only where
    `sample_weight` is non-zero.

    Args:
        backbone: a `MegaBackbone`.
        num_classes: int. Number of labels.
        preprocessor: a `MegaTokenClassifierPreprocessor` or `None`.
        activation: activation of the output layer; `None` (default) gives
            logits.
        dropout: float. Dropout before the output layer (HF
            `classifier_dropout`, or `hidden_dropout_prob` when unset).

    Examples:
    ```python
    tagger = keras_mega.models.MegaTokenClassifier.from_preset(
        "path/to/hf_mega", num_classes=9
    )
    tagger.fit(["John lives in Paris"], [[1, 0, 0, 2]])
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaTokenClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        activation=None,
        dropout=0.1,
        **kwargs,
    ):
        num_classes = check_num_classes(num_classes, type(self).__name__)
        check_vocabulary(backbone, preprocessor)
        compile = kwargs.pop("compile", True)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = head_dropout(backbone, dropout, "output_dropout")
        self.output_dense = head_dense(
            backbone, num_classes, "logits", activation=activation
        )

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        x = self.output_dropout(backbone(backbone_inputs))
        outputs = self.output_dense(x)
        super().__init__(
            inputs=inputs, outputs=outputs, compile=False, **kwargs
        )

        # === Config ===
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        if compile:
            self.compile()

    def _auto_metrics(self):
        return None

    def _auto_weighted_metrics(self):
        return super()._auto_metrics()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
            }
        )
        return config
