"""Preprocessing for `MegaCausalLM`: next-token prediction pairs."""

import keras
from keras_hub.models import CausalLMPreprocessor

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_document_packing import DocumentPacking
from keras_mega.models.mega_preset_io import MegaPresetMixin
from keras_mega.models.mega_tokenizer import MegaTokenizer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCausalLMPreprocessor(
    DocumentPacking, MegaPresetMixin, CausalLMPreprocessor
):
    """Tokenizes and packs text for `MegaCausalLM`.

    Each string becomes `<s> text </s>`, padded with `<pad>` (or cut at the
    end) to `sequence_length + 1` tokens; `x` is all but the last token,
    `y` all but the first, and `sample_weight` masks the padding.
    Sequences longer than `sequence_length` are truncated at the end; rows
    are never dropped.

    With `packing=True` (for a `MegaBackbone(document_packing=True)`) the
    strings of a batch are documents laid end to end and cut into rows of
    `sequence_length` tokens, nothing truncated: `x` gets `document_ids`,
    and only the last row is padded. A document crossing a row end goes on
    in the next row as a document of its own (no context across the cut),
    its tokens all kept. `y` is each token's next token in the same
    document; `sample_weight` is 0 at padding and at each document's last
    token, so the first token of a document is never a target predicted
    from the previous document (the token at a cut still predicts its
    successor in the next row). A batch of strings gives as many rows as
    it fills: rebatch a `tf.data` pipeline after it
    (`.unbatch().batch(k)`) for a fixed batch size.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        add_start_token: bool. Prepend `<s>`.
        add_end_token: bool. Append `</s>`.
        packing: bool. Pack documents into rows (see above).

    Examples:
    ```python
    preprocessor = keras_mega.models.MegaCausalLMPreprocessor.from_preset(
        "path/to/hf_mega", sequence_length=128
    )
    x, y, sample_weight = preprocessor(["The quick brown fox jumped."])

    # Packed rows of 4096 tokens, for a document_packing backbone.
    preprocessor = keras_mega.models.MegaCausalLMPreprocessor(
        tokenizer, sequence_length=4096, packing=True
    )
    x, y, sample_weight = preprocessor(documents)  # x["document_ids"]
    ```
    """

    backbone_cls = MegaBackbone
    tokenizer_cls = MegaTokenizer

    def __init__(
        self,
        tokenizer,
        sequence_length=1024,
        add_start_token=True,
        add_end_token=True,
        packing=False,
        **kwargs,
    ):
        super().__init__(
            tokenizer,
            sequence_length=sequence_length,
            add_start_token=add_start_token,
            add_end_token=add_end_token,
            **kwargs,
        )
        self.packing = bool(packing)

    def call(self, x, y=None, sample_weight=None, sequence_length=None):
        if not self.packing:
            return super().call(
                x,
                y=y,
                sample_weight=sample_weight,
                sequence_length=sequence_length,
            )
        if sequence_length not in (None, self.sequence_length):
            raise ValueError(
                "packing=True packs rows of the preprocessor's "
                f"sequence_length={self.sequence_length}; set it there "
                f"instead of passing sequence_length={sequence_length}."
            )
        return self._packed_call(x, y, sample_weight)

    def _packed_outputs(self, packed):
        x = {
            "token_ids": packed["token_ids"],
            "padding_mask": packed["padding_mask"],
            "document_ids": packed["document_ids"],
        }
        return keras.utils.pack_x_y_sample_weight(
            x, packed["next_ids"], packed["next_weights"]
        )

    def get_config(self):
        config = super().get_config()
        config.update({"packing": self.packing})
        return config
