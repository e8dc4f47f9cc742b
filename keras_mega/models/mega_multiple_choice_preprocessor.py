"""Preprocessing for `MegaMultipleChoice`: a prompt paired with each choice."""

import keras
import numpy as np

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preprocessing_utils import MegaPairPreprocessor
from keras_mega.models.mega_preprocessing_utils import as_string_batch
from keras_mega.models.mega_preprocessing_utils import pack_pair
from keras_mega.models.mega_preprocessing_utils import to_python
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaMultipleChoicePreprocessor(MegaPairPreprocessor):
    """Packs `(prompt, choices)` into one sequence per choice.

    `x` is a pair `(prompts, choices)`: a batch of prompt strings `[batch]`
    and a batch of choice lists `[batch, num_choices]` (every example has
    the same number of choices). Each choice becomes
    `<s> prompt </s></s> choice </s>` (RoBERTa pair layout), padded with
    `<pad>`, giving `token_ids` and `padding_mask` of shape
    `[batch, num_choices, sequence_length]`. `y`, if given, is the index of
    the right choice per example (checked to be in `[0, num_choices)`).

    Truncation: a pair longer than `sequence_length` is cut at the ends of
    its segments (`truncate="round_robin"`: one token at a time from each
    segment that still has some; `"waterfall"`: the choice is cut first).
    Rows are never dropped.

    Note that keras-hub preprocessors read a bare 2-tuple as `(x, y)`:
    call the layer as `preprocessor(x=(prompts, choices))`.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of each packed sequence.
        truncate: `"round_robin"` or `"waterfall"`.

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaMultipleChoicePreprocessor(
        tokenizer, sequence_length=32
    )
    x = preprocessor(x=(["The sky is"], [["blue", "green", "loud"]]))
    x["token_ids"].shape  # (1, 3, 32)
    x, y = preprocessor(
        x=(["The sky is"], [["blue", "green", "loud"]]), y=[0]
    )
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer

    pair_names = ("prompts", "choices")

    def _process(self, prompts, choices, y=None):
        prompts, batched = as_string_batch(prompts, "prompts")
        choices = to_python(choices)
        if not batched:
            choices = [choices]
        choices = np.array(choices, dtype=object)
        if choices.ndim != 2 or len(choices) != len(prompts):
            raise ValueError(
                "choices must be a batch of lists of strings, shape "
                f"[batch, num_choices] with batch={len(prompts)}; got an "
                f"array of shape {choices.shape}. Every example needs the "
                "same number of choices."
            )
        batch, num_choices = choices.shape
        tok = self.tokenizer
        prompt_ids = tok.tokenize(prompts)
        choice_ids = tok.tokenize([str(c) for c in choices.reshape(-1)])
        shape = (batch, num_choices, self.sequence_length)
        token_ids = np.empty(shape, "int32")
        for i in range(batch):
            for j in range(num_choices):
                token_ids[i, j], _, _ = pack_pair(
                    list(prompt_ids[i]),
                    list(choice_ids[i * num_choices + j]),
                    self.sequence_length,
                    tok,
                    self.truncate,
                )
        padding_mask = token_ids != tok.pad_token_id
        labels = np.zeros((batch,), "int32")
        if y is not None:
            labels = np.asarray(to_python(y), "int64").reshape(-1)
            if labels.shape != (batch,):
                raise ValueError(
                    f"y must be one choice index per example ({batch}); got "
                    f"shape {labels.shape}."
                )
            bad = (labels < 0) | (labels >= num_choices)
            if bad.any():
                raise ValueError(
                    f"y has choice indices {labels[bad].tolist()} outside "
                    f"[0, {num_choices}) (there are {num_choices} choices)."
                )
            labels = labels.astype("int32")
        outputs = [token_ids, padding_mask, labels]
        if not batched:
            outputs = [o[0] for o in outputs]
        return outputs

    def call(self, x, y=None, sample_weight=None):
        prompts, choices = self._unpack_pair(x)
        # Per example: [num_choices, sequence_length] ids and mask, a label.
        shape = [None, self.sequence_length]
        token_ids, padding_mask, labels = self._run(
            [prompts, choices, y],
            [(shape, "int32"), (shape, "bool"), ([], "int32")],
        )
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        if y is None:
            return keras.utils.pack_x_y_sample_weight(x, None, sample_weight)
        return keras.utils.pack_x_y_sample_weight(x, labels, sample_weight)
