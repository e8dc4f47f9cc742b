"""Preprocessing for `MegaMaskedLM`: packing and dynamic MLM masking."""

import keras
from keras_hub.models import MaskedLMPreprocessor

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preprocessing_utils import RobertaPacking
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaMaskedLMPreprocessor(RobertaPacking, MaskedLMPreprocessor):
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

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        truncate: `"round_robin"` or `"waterfall"`.
        mask_selection_rate: float. Fraction of tokens selected for masking.
        mask_selection_length: int. Maximum number of masked tokens per row.
        mask_token_rate: float. Fraction of selected tokens set to `<mask>`.
        random_token_rate: float. Fraction of selected tokens set to a random
            token.

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
