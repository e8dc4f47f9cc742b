"""Preprocessing for `MegaCausalLM`: next-token prediction pairs."""

import keras
from keras_hub.models import CausalLMPreprocessor

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preset_io import MegaPresetMixin
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCausalLMPreprocessor(MegaPresetMixin, CausalLMPreprocessor):
    """Tokenizes and packs text for `MegaCausalLM`.

    Each string becomes `<s> text </s>`, padded with `<pad>` (or cut at the
    end) to `sequence_length + 1` tokens; `x` is all but the last token,
    `y` all but the first, and `sample_weight` masks the padding.
    Sequences longer than `sequence_length` are truncated at the end; rows
    are never dropped.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        add_start_token: bool. Prepend `<s>`.
        add_end_token: bool. Append `</s>`.

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaCausalLMPreprocessor.from_preset(
        "path/to/hf_mega", sequence_length=128
    )
    x, y, sample_weight = preprocessor(["The quick brown fox jumped."])
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer
