"""`MegaMultipleChoice`: HF `MegaForMultipleChoice`'s head."""

import keras
from keras import ops
from keras_hub.models import Task

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_multiple_choice_preprocessor import (
    MegaMultipleChoicePreprocessor,
)
from keras_mega.models.mega_task import MegaHeadTask
from keras_mega.models.mega_task_utils import check_label_range
from keras_mega.models.mega_task_utils import head_dense
from keras_mega.models.mega_task_utils import head_dropout
from keras_mega.models.mega_task_utils import label_values
from keras_mega.models.mega_task_utils import with_segment_ids


class _FlattenChoices(keras.layers.Layer):
    """`[batch, choices, length]` -> `[batch * choices, length]`."""

    def call(self, x):
        return ops.reshape(x, (-1, ops.shape(x)[-1]))

    def compute_output_shape(self, shape):
        batch = None if None in shape[:2] else shape[0] * shape[1]
        return (batch, shape[2])


class _UnflattenChoices(keras.layers.Layer):
    """`[batch * choices, 1]` scores -> `[batch, choices]`."""

    def call(self, scores, token_ids):
        shape = ops.shape(token_ids)
        return ops.reshape(scores, (shape[0], shape[1]))

    def compute_output_shape(self, scores_shape, token_ids_shape):
        return tuple(token_ids_shape[:2])


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaMultipleChoice(MegaHeadTask, Task):
    """Mega for multiple choice: scores each choice of each example.

    HF `MegaForMultipleChoice`: every `(prompt, choice)` sequence runs
    through the backbone, the first token goes through HF `MegaModel`'s
    pooler (dense + tanh; part of this task here, not of the backbone),
    then dropout and a dense layer to one score. The scores of an example's
    choices are softmaxed by the loss.

    Inputs: `token_ids`, `padding_mask` of shape
    `[batch, num_choices, length]` (rank 3: anything else raises a
    `ValueError`). Output: logits `[batch, num_choices]`. Labels: the index
    of the right choice.

    `compile()` defaults to Adam (learning rate 5e-5), sparse categorical
    cross-entropy over the choices (from logits) and sparse categorical
    accuracy.

    Args:
        backbone: a `MegaBackbone`.
        preprocessor: a `MegaMultipleChoicePreprocessor` or `None`.
        dropout: float. Dropout before the score layer (HF
            `hidden_dropout_prob`).

    Examples:
    ```python
    model = keras_mega.models.MegaMultipleChoice.from_preset("path/to/hf_mega")
    model.fit(
        x=(["The sky is", "Grass is"], [["blue", "loud"], ["sad", "green"]]),
        y=[0, 1],
    )
    logits = model.predict((["The sky is"], [["blue", "loud"]]))  # (1, 2)
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaMultipleChoicePreprocessor

    def __init__(self, backbone, preprocessor=None, dropout=0.1, **kwargs):
        if getattr(backbone, "cross_attention", False):
            raise ValueError(
                "MegaMultipleChoice does not support cross-attention backbones."
            )
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.flatten_choices = _FlattenChoices(name="flatten_choices")
        self.pooler_dense = head_dense(
            backbone, backbone.hidden_dim, "pooler_dense", activation="tanh"
        )
        self.output_dropout = head_dropout(backbone, dropout, "output_dropout")
        self.output_dense = head_dense(backbone, 1, "logits")
        self.unflatten_choices = _UnflattenChoices(name="unflatten_choices")

        # === Functional Model ===
        inputs = {
            "token_ids": keras.Input(
                shape=(None, None), dtype="int32", name="token_ids"
            ),
            "padding_mask": keras.Input(
                shape=(None, None), dtype="int32", name="padding_mask"
            ),
        }
        backbone_inputs = with_segment_ids(
            backbone,
            {name: self.flatten_choices(x) for name, x in inputs.items()},
        )
        x = backbone(backbone_inputs)[:, 0, :]
        x = self.pooler_dense(x)
        x = self.output_dropout(x)
        scores = self.output_dense(x)
        outputs = self.unflatten_choices(scores, inputs["token_ids"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.dropout = dropout

    def call(self, inputs, *args, **kwargs):
        for name in ("token_ids", "padding_mask"):
            value = inputs.get(name) if isinstance(inputs, dict) else None
            if value is not None and len(value.shape) != 3:
                raise ValueError(
                    f"MegaMultipleChoice takes `{name}` of rank 3, "
                    "[batch, num_choices, length]; got shape "
                    f"{tuple(value.shape)}. Use MegaMultipleChoicePreprocessor"
                    " or add the choices axis."
                )
        return super().call(inputs, *args, **kwargs)

    def _check_labels(self, x, y):
        # Raw `(prompts, choices)` are checked by the preprocessor.
        if not isinstance(x, dict) or x.get("token_ids") is None:
            return
        shape = getattr(x["token_ids"], "shape", None)
        if shape is None or len(shape) != 3 or shape[1] is None:
            return
        num_choices = int(shape[1])
        check_label_range(
            label_values(y),
            num_choices,
            f"labels are choice indices and there are {num_choices} "
            "choices (token_ids of shape [batch, num_choices, length])",
        )
