"""`MegaTextClassifier`: HF `MegaForSequenceClassification`'s head."""

import keras
from keras_hub.models import TextClassifier

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_task import MegaHeadTask
from keras_mega.models.mega_task import MegaLabelNamesMixin
from keras_mega.models.mega_task_utils import check_label_range
from keras_mega.models.mega_task_utils import check_num_classes
from keras_mega.models.mega_task_utils import classifier_output
from keras_mega.models.mega_task_utils import head_dense
from keras_mega.models.mega_task_utils import head_dropout
from keras_mega.models.mega_task_utils import label_values
from keras_mega.models.mega_task_utils import task_inputs
from keras_mega.models.mega_text_classifier_preprocessor import (
    MegaTextClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTextClassifier(MegaLabelNamesMixin, MegaHeadTask, TextClassifier):
    """Mega for sequence classification and regression.

    HF `MegaClassificationHead` on the first token (`<s>`): dropout,
    dense + tanh, dropout, and an output projection to `num_classes`
    logits. Three problem types, as HF's `problem_type`:

    - single label (default): softmax classes, sparse categorical
      cross-entropy on integer labels;
    - `multi_label=True`: independent sigmoid per class, binary
      cross-entropy on `[batch, num_classes]` 0/1 labels (HF
      `multi_label_classification`);
    - `num_classes=1` without `multi_label`: regression, mean squared error
      on float targets (HF `num_labels=1`).

    Inputs: `token_ids`, `padding_mask` (`[batch, length]`). Output:
    `[batch, num_classes]` logits (or scores, see `activation`). For long
    documents use a backbone with `chunk_size` (chunked attention).

    `compile()` defaults to Adam (learning rate 5e-5), the problem type's
    loss (from logits unless `activation` gives probabilities) and metric:
    sparse categorical accuracy, binary accuracy or mean absolute error.

    Args:
        backbone: a `MegaBackbone`.
        num_classes: int. Number of classes (1 for regression).
        preprocessor: a `MegaTextClassifierPreprocessor` or `None`.
        activation: activation of the output layer; `None` (default) gives
            logits, which the default losses expect.
        hidden_dim: int. Width of the dense layer; defaults to the
            backbone's `hidden_dim` (HF).
        dropout: float. Dropout of the head (HF `classifier_dropout`, or
            `hidden_dropout_prob` when that is unset).
        multi_label: bool. Multi-label classification.
        id2label: the label names, `{id: name}` for ids `0 ..
            num_classes - 1` (or a list of names); HF's `id2label`, kept by
            conversion and presets. `label2id` is its inverse.

    `fit()` and `evaluate()` refuse labels outside `[0, num_classes)`
    (multi-label: 0/1 arrays of shape `[batch, num_classes]`), naming the
    label and `num_classes`, for labels given as arrays or lists.

    Examples:
    ```python
    # An HF MegaForSequenceClassification checkpoint: head and labels
    # (a num_classes equal to the checkpoint's keeps the trained head).
    classifier = keras_mega.models.MegaTextClassifier.from_preset(
        "path/to/hf_mega"
    )
    classifier.id2label  # {0: "NEGATIVE", 1: "POSITIVE"}, HF's names
    # Any HF Mega checkpoint with a new head.
    classifier = keras_mega.models.MegaTextClassifier.from_preset(
        "path/to/hf_mega", num_classes=4
    )
    classifier.fit(["What an amazing movie!", "A waste of time."], [1, 0])

    # A custom long-document classifier.
    backbone = keras_mega.models.MegaBackbone(
        vocabulary_size=1000, num_layers=2, hidden_dim=64,
        intermediate_dim=128, shared_dim=32, ema_dim=8, chunk_size=128,
    )
    classifier = keras_mega.models.MegaTextClassifier(
        backbone, num_classes=5, multi_label=True
    )
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaTextClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        activation=None,
        hidden_dim=None,
        dropout=0.1,
        multi_label=False,
        id2label=None,
        **kwargs,
    ):
        num_classes = check_num_classes(num_classes, type(self).__name__)
        hidden_dim = hidden_dim or backbone.hidden_dim
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooled_dropout = head_dropout(backbone, dropout, "pooled_dropout")
        self.pooled_dense = head_dense(
            backbone, hidden_dim, "pooled_dense", activation="tanh"
        )
        self.output_dropout, self.output_dense = classifier_output(
            backbone, num_classes, activation, dropout
        )

        # === Config === (before the model, which compiles with them)
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.multi_label = multi_label
        self.id2label = id2label

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        x = backbone(backbone_inputs)[:, 0, :]
        x = self.pooled_dropout(x)
        x = self.pooled_dense(x)
        x = self.output_dropout(x)
        outputs = self.output_dense(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    @property
    def problem_type(self):
        """HF's name of the task: regression, single or multi label."""
        if self.multi_label:
            return "multi_label_classification"
        if self.num_classes == 1:
            return "regression"
        return "single_label_classification"

    def _check_labels(self, x, y):
        values = label_values(y)
        if values is None or self.problem_type == "regression":
            return
        if self.problem_type == "multi_label_classification":
            if values.ndim < 1 or values.shape[-1] != self.num_classes:
                raise ValueError(
                    "Multi-label labels are 0/1 arrays of shape [batch, "
                    f"num_classes={self.num_classes}]; got shape "
                    f"{values.shape}."
                )
            bad = (values < 0) | (values > 1)
            if bad.any():
                raise ValueError(
                    f"Label {values[bad][0]} is out of range: multi-label "
                    "labels are 0/1 (or in [0, 1]) for each of the "
                    f"num_classes={self.num_classes} classes."
                )
            return
        if values.ndim == 2 and values.shape[-1] == self.num_classes > 1:
            # One-hot or soft labels of a categorical loss.
            return
        check_label_range(
            values,
            self.num_classes,
            f"the classifier has num_classes={self.num_classes} classes",
            hint=" Labels are class ids; pass the right num_classes "
            "(a new head) if the data has more classes.",
        )

    def _auto_loss(self):
        if self.problem_type == "regression":
            return keras.losses.MeanSquaredError()
        if self.problem_type == "multi_label_classification":
            return keras.losses.BinaryCrossentropy(
                from_logits=self._from_logits(keras.activations.sigmoid)
            )
        return super()._auto_loss()

    def _auto_metrics(self):
        if self.problem_type == "regression":
            return [keras.metrics.MeanAbsoluteError()]
        if self.problem_type == "multi_label_classification":
            from_logits = self._from_logits(keras.activations.sigmoid)
            threshold = 0.0 if from_logits else 0.5
            return [keras.metrics.BinaryAccuracy(threshold=threshold)]
        return super()._auto_metrics()
