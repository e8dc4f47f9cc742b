"""Preprocessing for `MegaTokenClassifier`: word labels aligned to tokens."""

import keras
import numpy as np

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preprocessing_utils import MegaPythonPreprocessor
from keras_mega.models.mega_preprocessing_utils import to_python
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTokenClassifierPreprocessor(MegaPythonPreprocessor):
    """Tokenizes words and aligns per-word labels to tokens.

    keras-hub has no token classification preprocessor; this is a small one
    in the same style. Input text is a batch of strings, split into words on
    whitespace (`str.split()`), or a batch of lists of words (pre-split, as
    HF's `is_split_into_words=True`). Each word is tokenized on its own,
    with a leading space unless it is the first word (with
    `add_prefix_space=True` the first word gets one too, as HF's
    `RobertaTokenizerFast(add_prefix_space=True)` does for pre-split words).
    The sequence is `<s> tokens </s>` padded with `<pad>`.

    Labels are one integer per word (a list per example, or a `[batch,
    max_words]` array padded with negative values: a negative label means
    "no label for this word", like HF's -100). The label of a word goes to
    its first token (to all its tokens with `label_all_subtokens=True`);
    `sample_weight` is 1 there and 0 on every other position, so `<s>`,
    `</s>`, padding and unlabeled tokens do not count in the loss.

    Truncation: a sequence longer than `sequence_length` keeps its first
    `sequence_length - 2` tokens; labels of the words (or word pieces) cut
    off are dropped with them. Rows are never dropped. A label row with
    fewer labels than words, or with more non-negative labels than words,
    is an error.

    Outputs `(x, y, sample_weight)` with `x = {"token_ids", "padding_mask"}`
    of shape `[batch, sequence_length]` (NumPy arrays when called directly).
    Per-example `sample_weight` (`[batch]`) multiplies the token weights.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        add_prefix_space: bool. Tokenize the first word with a leading space.
        label_all_subtokens: bool. Label every token of a word, not only its
            first one.

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaTokenClassifierPreprocessor(
        tokenizer, sequence_length=32
    )
    x, y, sample_weight = preprocessor(
        ["John lives in Paris", "Hi"], y=[[1, 0, 0, 2], [0, -1, -1, -1]]
    )
    # Pre-split words.
    x = preprocessor([["John", "lives"], ["Hi"]])
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer

    def __init__(
        self,
        tokenizer,
        sequence_length=512,
        add_prefix_space=False,
        label_all_subtokens=False,
        **kwargs,
    ):
        if sequence_length < 2:
            raise ValueError(
                f"sequence_length must be at least 2, got {sequence_length}."
            )
        super().__init__(tokenizer, sequence_length, **kwargs)
        self.add_prefix_space = add_prefix_space
        self.label_all_subtokens = label_all_subtokens

    def _words(self, x):
        x = to_python(x)
        if isinstance(x, str):
            return [x.split()], False
        if isinstance(x, list):
            if all(isinstance(s, str) for s in x):
                return [s.split() for s in x], True
            if all(
                isinstance(row, list) and all(isinstance(w, str) for w in row)
                for row in x
            ):
                return x, True
        raise ValueError(
            "MegaTokenClassifierPreprocessor takes a string, a batch of "
            "strings, or a batch of lists of words. Received: "
            f"{x!r:.200}"
        )

    def _labels(self, y, words, batched):
        y = to_python(y)
        if not batched:
            y = [y]
        if not isinstance(y, list) or len(y) != len(words):
            raise ValueError(
                f"Expected one row of word labels per example ({len(words)} "
                f"examples). Received: {y!r:.200}"
            )
        rows = []
        for i, (row, row_words) in enumerate(zip(y, words)):
            row = list(row) if isinstance(row, (list, tuple)) else [row]
            n = len(row_words)
            extra = [v for v in row[n:] if v >= 0]
            if len(row) < n or extra:
                raise ValueError(
                    f"Example {i} has {n} words but {len(row)} labels "
                    f"({len(extra)} non-negative past the last word): give "
                    "one label per word, padded with negative values."
                )
            rows.append([int(v) for v in row[:n]])
        return rows

    def _process(self, x, y=None, sample_weight=None):
        words, batched = self._words(x)
        labels = None if y is None else self._labels(y, words, batched)
        tok = self.tokenizer
        length = self.sequence_length
        flat = [
            (" " + w if (j > 0 or self.add_prefix_space) else w)
            for row in words
            for j, w in enumerate(row)
        ]
        flat_ids = tok.tokenize(flat) if flat else []
        batch = len(words)
        token_ids = np.full((batch, length), tok.pad_token_id, "int32")
        out_labels = np.zeros((batch, length), "int32")
        weights = np.zeros((batch, length), "float32")
        k = 0
        for i, row in enumerate(words):
            ids = [tok.start_token_id]
            for j in range(len(row)):
                word_ids = list(flat_ids[k])
                k += 1
                room = length - 1 - len(ids)
                word_ids = word_ids[: max(room, 0)]
                if labels is not None and labels[i][j] >= 0 and word_ids:
                    end = len(word_ids) if self.label_all_subtokens else 1
                    start = len(ids)
                    out_labels[i, start : start + end] = labels[i][j]
                    weights[i, start : start + end] = 1.0
                ids.extend(word_ids)
            ids.append(tok.end_token_id)
            token_ids[i, : len(ids)] = ids
        padding_mask = token_ids != tok.pad_token_id
        if sample_weight is not None:
            sample_weight = np.asarray(to_python(sample_weight), "float32")
            if not batched:
                sample_weight = sample_weight[None]
            if sample_weight.shape != (batch,):
                raise ValueError(
                    "sample_weight must be one weight per example, shape "
                    f"({batch},). Received shape {sample_weight.shape}."
                )
            weights = weights * sample_weight[:, None]
        outputs = [token_ids, padding_mask, out_labels, weights]
        if not batched:
            outputs = [o[0] for o in outputs]
        return outputs

    def call(self, x, y=None, sample_weight=None):
        # Per example: ids, mask, labels and weights, one per position.
        shape = [self.sequence_length]
        dtypes = ["int32", "bool", "int32", "float32"]
        token_ids, padding_mask, labels, weights = self._run(
            [x, y, sample_weight], [(shape, dtype) for dtype in dtypes]
        )
        x = {"token_ids": token_ids, "padding_mask": padding_mask}
        if y is None:
            return keras.utils.pack_x_y_sample_weight(x)
        return keras.utils.pack_x_y_sample_weight(x, labels, weights)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "add_prefix_space": self.add_prefix_space,
                "label_all_subtokens": self.label_all_subtokens,
            }
        )
        return config
