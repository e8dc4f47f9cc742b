"""Preprocessing for `MegaMaskedLM`: packing and dynamic MLM masking."""

import keras
from keras_hub.models import MaskedLMPreprocessor

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_document_packing import DocumentPacking
from keras_mega.models.mega_preprocessing_utils import RobertaPacking
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaMaskedLMPreprocessor(
    DocumentPacking, RobertaPacking, MaskedLMPreprocessor
):
    """Tokenizes, packs and randomly masks text for `MegaMaskedLM`.

    Packs one segment as `<s> a </s>` or several as `<s> a </s></s> b </s>`
    (RoBERTa layout), then masks like keras-hub's `MaskedLMPreprocessor`:
    `mask_selection_rate` of the non-special tokens are selected (at most
    `mask_selection_length` per sequence); of those, `mask_token_rate` become
    `<mask>`, `random_token_rate` a random token, the rest stay. Returns
    `(x, y, sample_weight)` with `x = {"token_ids", "padding_mask",
    "mask_positions"}`, `y` the original ids at `mask_positions` and
    `sample_weight` 0 where `mask_positions` is padding.

    Truncation: sequences longer than `sequence_length` are cut at the end
    (`truncate="round_robin"` or `"waterfall"` across segments); rows are
    never dropped.

    With `packing=True` (for a `MegaBackbone(document_packing=True)`) the
    strings of a batch are documents (`<s> text </s>` each) laid end to
    end and cut into rows of `sequence_length` tokens, nothing truncated;
    `x` gets `document_ids` and only the last row is padded. A document
    crossing a row end goes on in the next row as a document of its own
    (no context across the cut). Masking is the same, per row. A batch of
    strings gives as many rows as it fills: rebatch a `tf.data` pipeline
    after it (`.unbatch().batch(k)`) for a fixed batch size.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        truncate: `"round_robin"` or `"waterfall"`.
        mask_selection_rate: float. Fraction of tokens selected for masking.
        mask_selection_length: int. Maximum number of masked tokens per row.
        mask_token_rate: float. Fraction of selected tokens set to `<mask>`.
        random_token_rate: float. Fraction of selected tokens set to a random
            token.
        packing: bool. Pack documents into rows (see above).

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaMaskedLMPreprocessor.from_preset(
        "path/to/hf_mega", sequence_length=128, mask_selection_length=20
    )
    x, y, sample_weight = preprocessor(["The quick brown fox jumped."])
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer

    def __init__(self, tokenizer, sequence_length=512, packing=False, **kwargs):
        super().__init__(tokenizer, sequence_length=sequence_length, **kwargs)
        self.packing = bool(packing)

    def call(self, x, y=None, sample_weight=None):
        if not self.packing:
            return super().call(x, y=y, sample_weight=sample_weight)
        return self._packed_call(x, y, sample_weight)

    def _packed_outputs(self, packed):
        masked = self.masker(packed["token_ids"])
        x = {
            "token_ids": masked["token_ids"],
            "padding_mask": packed["padding_mask"],
            "document_ids": packed["document_ids"],
            "mask_positions": masked["mask_positions"],
        }
        return keras.utils.pack_x_y_sample_weight(
            x, masked["mask_ids"], masked["mask_weights"]
        )

    def get_config(self):
        config = super().get_config()
        config.update({"packing": self.packing})
        return config
