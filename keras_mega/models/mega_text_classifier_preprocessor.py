"""Preprocessing for `MegaTextClassifier`: single strings or pairs."""

import keras
from keras_hub.models import TextClassifierPreprocessor

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preprocessing_utils import RobertaPacking
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTextClassifierPreprocessor(
    RobertaPacking, TextClassifierPreprocessor
):
    """Tokenizes and packs text for `MegaTextClassifier`, RoBERTa style.

    One segment becomes `<s> a </s>`; a pair becomes `<s> a </s></s> b </s>`
    (HF's `RobertaTokenizer` layout), padded with `<pad>` to
    `sequence_length`. Outputs `{"token_ids", "padding_mask"}`; labels and
    sample weights pass through unchanged.

    Truncation: inputs longer than `sequence_length` are cut at the end of
    the segments, never dropped. `truncate="round_robin"` (default) takes one
    token at a time from each segment that still has some;
    `"waterfall"` fills the segments left to right (the last segment is cut
    first).

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        truncate: `"round_robin"` or `"waterfall"`.

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaTextClassifierPreprocessor.from_preset(
        "path/to/hf_mega", sequence_length=128
    )
    preprocessor(["The quick brown fox.", "Call me Ishmael."])
    # Sentence pairs.
    preprocessor((["A fox."], ["An animal."]))
    # Labeled data for `fit()`.
    x, y, sample_weight = preprocessor(["Great!", "Awful."], y=[1, 0])
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer
