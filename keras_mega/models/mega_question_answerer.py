"""`MegaQuestionAnswerer`: HF `MegaForQuestionAnswering`'s head."""

import keras
from keras_hub.models import Task

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_question_answerer_preprocessor import (
    MegaQuestionAnswererPreprocessor,
)
from keras_mega.models.mega_task import MegaHeadTask
from keras_mega.models.mega_task_utils import check_label_range
from keras_mega.models.mega_task_utils import head_dense
from keras_mega.models.mega_task_utils import label_values
from keras_mega.models.mega_task_utils import sequence_length_of
from keras_mega.models.mega_task_utils import task_inputs


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaQuestionAnswerer(MegaHeadTask, Task):
    """Mega for extractive question answering (span prediction).

    HF `MegaForQuestionAnswering`'s head: one dense layer with two outputs
    per position, the logits of the answer's first and last token. With a
    `MegaQuestionAnswererPreprocessor`, `fit()` takes
    `(questions, contexts)` strings and the answers' character spans; its
    `span_to_text()` turns predicted positions back into text.

    Inputs: `token_ids`, `padding_mask` (`[batch, length]`). Output:
    `{"start_logits": [batch, length], "end_logits": [batch, length]}`.
    Labels are `{"start_logits": start_position, "end_logits":
    end_position}` (token positions). `compile()` defaults to Adam
    (learning rate 5e-5), the sum of the two sparse categorical
    cross-entropies (from logits), and the accuracy of each.

    Args:
        backbone: a `MegaBackbone`.
        preprocessor: a `MegaQuestionAnswererPreprocessor` or `None`.

    Examples:
    ```python
    qa = keras_mega.models.MegaQuestionAnswerer.from_preset("path/to/hf_mega")
    context = "The quick brown fox jumped."
    qa.fit(x=(["What jumped?"], [context]), y=[[16, 19]])
    out = qa.predict((["What jumped?"], [context]))
    start = out["start_logits"][0].argmax()
    end = out["end_logits"][0].argmax()
    qa.preprocessor.span_to_text("What jumped?", context, start, end)
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaQuestionAnswererPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.span_dense = head_dense(backbone, 2, "qa_outputs")

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        logits = self.span_dense(backbone(backbone_inputs))
        outputs = {
            "start_logits": logits[..., 0],
            "end_logits": logits[..., 1],
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    def _check_labels(self, x, y):
        # Raw `(questions, contexts)` spans are checked by the preprocessor.
        length = sequence_length_of(x)
        if length is None:
            return
        parts = y.values() if isinstance(y, dict) else [y]
        for part in parts:
            check_label_range(
                label_values(part),
                int(length),
                f"labels are token positions and the inputs have {length} "
                "positions",
            )

    def _auto_loss(self):
        # One cross-entropy per output; Keras sums them.
        loss = super()._auto_loss
        return {name: loss() for name in ("start_logits", "end_logits")}

    def _auto_metrics(self):
        metrics = super()._auto_metrics
        return {name: metrics() for name in ("start_logits", "end_logits")}
