"""Preprocessing for `MegaTextClassifier`: single strings or pairs."""

import keras
from keras_hub.layers import MultiSegmentPacker
from keras_hub.models import TextClassifierPreprocessor

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTextClassifierPreprocessor(TextClassifierPreprocessor):
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

    def build(self, input_shape):
        super().build(input_shape)
        # RoBERTa doubles the separator between segments.
        self.packer = MultiSegmentPacker(
            start_value=self.tokenizer.start_token_id,
            end_value=self.tokenizer.end_token_id,
            sep_value=[self.tokenizer.end_token_id] * 2,
            pad_value=self.tokenizer.pad_token_id,
            truncate=self.truncate,
            sequence_length=self.sequence_length,
        )

    def call(self, x, y=None, sample_weight=None):
        output = super().call(x, y=y, sample_weight=sample_weight)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(output)
        # Mega (like HF's RoBERTa tokenizer) uses no segment ids.
        del x["segment_ids"]
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
