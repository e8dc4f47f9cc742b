"""Preprocessing for `MegaQuestionAnswerer`: answer spans to token spans."""

import keras
import numpy as np

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preprocessing_utils import MegaPairPreprocessor
from keras_mega.models.mega_preprocessing_utils import as_string_batch
from keras_mega.models.mega_preprocessing_utils import pack_pair
from keras_mega.models.mega_preprocessing_utils import to_python
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaQuestionAnswererPreprocessor(MegaPairPreprocessor):
    """Packs `(question, context)` and maps answer spans to tokens.

    `x` is a pair `(questions, contexts)` of strings (or batches of
    strings), packed as `<s> question </s></s> context </s>` (RoBERTa pair
    layout) and padded with `<pad>` to `sequence_length`. `y`, for
    training, is the answer's character span in the context, `[batch, 2]`
    integers `(start, end)` with `end` exclusive (SQuAD's `answer_start` and
    `answer_start + len(text)`). It becomes
    `{"start_logits": start_token, "end_logits": end_token}`: the positions
    in the packed sequence of the first and last token of the answer, keyed
    by the model output they supervise.

    Truncation: when the pair does not fit, tokens are cut at the ends of
    the segments (`truncate="waterfall"`, the default, keeps the question
    whole and cuts the end of the context; `"round_robin"` takes one token
    at a time from each segment). Rows are never dropped, and the context
    is not split into several windows: an answer that ends past the kept
    part of the context raises a `ValueError` naming the example (raise
    `sequence_length` or shorten the context around the answer). A span
    outside `[0, len(context)]`, or empty, is an error too.

    Use `span_to_text()` to turn predicted token positions back into text
    of the context.

    Note that keras-hub preprocessors read a bare 2-tuple as `(x, y)`:
    call the layer as `preprocessor(x=(questions, contexts))`.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        truncate: `"waterfall"` or `"round_robin"`.

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaQuestionAnswererPreprocessor(
        tokenizer, sequence_length=64
    )
    context = "The quick brown fox jumped."
    x, y = preprocessor(
        x=(["What jumped?"], [context]), y=[[16, 19]]  # "fox"
    )
    start, end = y["start_logits"][0], y["end_logits"][0]
    preprocessor.span_to_text("What jumped?", context, start, end)  # "fox"
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer

    pair_names = ("questions", "contexts")

    def __init__(
        self, tokenizer, sequence_length=512, truncate="waterfall", **kwargs
    ):
        super().__init__(tokenizer, sequence_length, truncate, **kwargs)

    def _pack(self, questions, contexts):
        tok = self.tokenizer
        question_ids = tok.tokenize(questions)
        context_ids, offsets = tok.tokenize_with_offsets(contexts)
        packed = []
        for q_ids, c_ids, c_offsets in zip(question_ids, context_ids, offsets):
            ids, n_question, n_context = pack_pair(
                list(q_ids),
                c_ids,
                self.sequence_length,
                tok,
                self.truncate,
            )
            # Position of the first context token in the packed sequence.
            packed.append((ids, n_question + 3, n_context, c_offsets))
        return packed

    def _process(self, questions, contexts, y=None):
        questions, batched = as_string_batch(questions, "questions")
        contexts, _ = as_string_batch(contexts, "contexts")
        if len(questions) != len(contexts):
            raise ValueError(
                f"Got {len(questions)} questions but {len(contexts)} contexts."
            )
        packed = self._pack(questions, contexts)
        token_ids = np.array([p[0] for p in packed], "int32")
        padding_mask = token_ids != self.tokenizer.pad_token_id
        starts = np.zeros((len(packed),), "int32")
        ends = np.zeros((len(packed),), "int32")
        if y is not None:
            spans = np.asarray(to_python(y), "int64").reshape(-1, 2)
            if len(spans) != len(packed):
                raise ValueError(
                    "y must be one (start, end) character span per example, "
                    f"shape [{len(packed)}, 2]; got {len(spans)} spans."
                )
            for i, ((start, end), context) in enumerate(zip(spans, contexts)):
                first, n_context, offsets = packed[i][1:]
                starts[i], ends[i] = self._span_to_tokens(
                    i, int(start), int(end), context, offsets, n_context
                )
                starts[i] += first
                ends[i] += first
        outputs = [token_ids, padding_mask, starts, ends]
        if not batched:
            outputs = [o[0] for o in outputs]
        return outputs

    def _span_to_tokens(self, i, start, end, context, offsets, n_context):
        if not 0 <= start < end <= len(context):
            raise ValueError(
                f"Example {i}: answer span ({start}, {end}) is not a "
                f"non-empty span of its context of {len(context)} characters."
            )
        covering = [
            k for k, (s, e) in enumerate(offsets) if s < end and e > start
        ]
        if not covering:
            raise ValueError(
                f"Example {i}: answer span ({start}, {end}) "
                f"{context[start:end]!r} covers only whitespace."
            )
        first, last = covering[0], covering[-1]
        if last >= n_context:
            raise ValueError(
                f"Example {i}: the answer {context[start:end]!r} (characters "
                f"{start}-{end}) ends at context token {last}, but only "
                f"{n_context} of the context's {len(offsets)} tokens fit in "
                f"sequence_length={self.sequence_length} after the question. "
                "Raise sequence_length or shorten the context."
            )
        return first, last

    def span_to_text(self, question, context, start, end):
        """The context text of packed token positions `start..end`.

        Args:
            question: str. The question, as given to the preprocessor.
            context: str. The context.
            start: int. Position of the first answer token in the packed
                sequence (e.g. the argmax of `start_logits`).
            end: int. Position of the last answer token (inclusive).

        Returns:
            The substring of `context` those tokens cover (without leading
            whitespace), or `""` if the span lies outside the context.
        """
        ((_, first, n_context, offsets),) = self._pack([question], [context])
        start, end = int(start) - first, int(end) - first
        if start < 0 or end >= n_context or start > end:
            return ""
        return context[offsets[start][0] : offsets[end][1]]

    def call(self, x, y=None, sample_weight=None):
        questions, contexts = self._unpack_pair(x)
        # Per example: ids and mask, the answer's first and last token.
        shape = [self.sequence_length]
        token_ids, padding_mask, starts, ends = self._run(
            [questions, contexts, y],
            [(shape, "int32"), (shape, "bool"), ([], "int32"), ([], "int32")],
        )
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        if y is None:
            return keras.utils.pack_x_y_sample_weight(x, None, sample_weight)
        y = {"start_logits": starts, "end_logits": ends}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
