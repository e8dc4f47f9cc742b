"""`MegaTokenClassifier`: HF `MegaForTokenClassification`'s head."""

import keras
from keras_hub.models import Task

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_task import MegaHeadTask
from keras_mega.models.mega_task import MegaLabelNamesMixin
from keras_mega.models.mega_task_utils import check_label_range
from keras_mega.models.mega_task_utils import check_num_classes
from keras_mega.models.mega_task_utils import classifier_output
from keras_mega.models.mega_task_utils import label_values
from keras_mega.models.mega_task_utils import loss_ignore_class
from keras_mega.models.mega_task_utils import task_inputs
from keras_mega.models.mega_token_classifier_preprocessor import (
    MegaTokenClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTokenClassifier(MegaLabelNamesMixin, MegaHeadTask, Task):
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
        id2label: the label names, `{id: name}` for ids `0 ..
            num_classes - 1` (or a list of names); HF's `id2label`, kept by
            conversion and presets. `label2id` is its inverse.

    `fit()` and `evaluate()` refuse labels `>= num_classes`, naming the
    label and `num_classes`, for labels given as arrays or lists. Negative
    word labels mean "no label" for the preprocessor; labels of
    preprocessed inputs (`token_ids` given) must be in `[0, num_classes)`
    (or the compiled loss's `ignore_class`): give unlabeled positions
    `sample_weight` 0.

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
        id2label=None,
        **kwargs,
    ):
        num_classes = check_num_classes(num_classes, type(self).__name__)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout, self.output_dense = classifier_output(
            backbone, num_classes, activation, dropout
        )

        # === Config === (before the model, which compiles with them)
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.id2label = id2label

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        x = self.output_dropout(backbone(backbone_inputs))
        outputs = self.output_dense(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def _check_labels(self, x, y):
        values = label_values(y)
        if values is None:
            return
        preprocessed = isinstance(x, dict) and "token_ids" in x
        if preprocessed:
            ignore = loss_ignore_class(self)
            allowed = () if ignore is None else (ignore,)
            hint = (
                " Labels of preprocessed inputs are class ids at every "
                "position: give positions without a label any valid id "
                "and sample_weight 0, or compile with "
                "SparseCategoricalCrossentropy(ignore_class=...)."
            )
        else:
            # Negative word labels mean "no label" to the preprocessor.
            allowed, values = (), values[values >= 0]
            hint = " Labels are class ids (negative: no label)."
        check_label_range(
            values,
            self.num_classes,
            f"the token classifier has num_classes={self.num_classes} classes",
            allowed=allowed,
            hint=hint,
        )

    def _auto_metrics(self):
        return None

    def _auto_weighted_metrics(self):
        return super()._auto_metrics()
