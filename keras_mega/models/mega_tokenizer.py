"""The Mega tokenizer: RoBERTa's byte-level BPE."""

import keras
import numpy as np
from keras_hub.tokenizers import BytePairTokenizer
from tokenizers import AddedToken
from tokenizers import pre_tokenizers

from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_preset_io import MegaPresetMixin

try:
    import tensorflow as tf
except ImportError:  # TF is only needed inside `tf.data` pipelines.
    tf = None


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaTokenizer(MegaPresetMixin, BytePairTokenizer):
    """Mega's tokenizer: RoBERTa's byte-level BPE.

    HF Mega checkpoints (e.g. `mnaylor/mega-base-wikitext`) ship RoBERTa's
    `vocab.json` and `merges.txt`. This tokenizer turns raw strings into
    exactly the ids HF's `RobertaTokenizer` and `RobertaTokenizerFast` give for
    the same files with `add_special_tokens=False`, including leading spaces,
    runs of spaces, tabs, newlines and any unicode: it splits words with
    GPT-2's regular expression (which keras-hub's generic `BytePairTokenizer`
    replaces by Llama 3's) and, inside a `tf.data` pipeline, runs the same
    code through `tf.py_function` instead of keras-hub's approximation of
    that expression in TF ops. The special tokens `"<s>"` (start),
    `"</s>"` (end), `"<pad>"`, `"<unk>"` and `"<mask>"` must be in the
    vocabulary; their ids come from it (RoBERTa: 0, 2, 1, 3, 50264). As in
    HF, `"<mask>"` in the text swallows the space before it.

    Byte-level BPE is lossless: `detokenize(tokenize(text)) == text` for
    any text without special-token strings in it.

    Args:
        vocabulary: dict mapping token strings to ids, or the path of a
            `vocab.json` file.
        merges: list of merge rules (`"a b"` strings), or the path of a
            `merges.txt` file.

    Examples:
    ```python
    # From an HF Mega checkpoint directory (after `import keras_mega`).
    tokenizer = keras_mega.models.MegaTokenizer.from_preset("path/to/hf_mega")
    tokenizer(["The quick brown fox.", "Call me Ishmael."])
    tokenizer.detokenize(tokenizer("The quick brown fox."))

    # A custom vocabulary ("Ġ" is a space).
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({"a": 5, "Ġ": 6, "q": 7, "u": 8, "i": 9, "c": 10, "k": 11})
    vocab.update({"Ġq": 12, "uick": 13, "Ġquick": 14, "ui": 15, "ck": 16})
    merges = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick"]
    tokenizer = keras_mega.models.MegaTokenizer(vocabulary=vocab, merges=merges)
    tokenizer("a quick")  # [5, 14]
    ```
    """

    backbone_cls = MegaBackbone

    def __init__(self, vocabulary=None, merges=None, **kwargs):
        self._add_special_token("<s>", "start_token")
        self._add_special_token("</s>", "end_token")
        self._add_special_token("<pad>", "pad_token")
        self._add_special_token("<unk>", "unk_token")
        self._add_special_token("<mask>", "mask_token")
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def _set_vocabulary_and_merges_tokenizers(self, vocabulary, merges):
        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        # GPT-2's split (what RoBERTa uses), not keras-hub's Llama 3 one.
        self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=self.add_prefix_space, use_regex=True
        )
        # HF's RobertaTokenizer: "<mask>" strips the whitespace before it.
        mask = getattr(self, "mask_token", None)
        if mask is not None and mask in vocabulary:
            self._tokenizer.add_special_tokens(
                [AddedToken(mask, lstrip=True, special=True)]
            )

    def tokenize(self, inputs):
        self._check_vocabulary()
        if tf is not None and not tf.executing_eagerly():
            return self._tokenize_graph(inputs)
        return self._tokenize_tokenizers(inputs)

    def tokenize_with_offsets(self, texts):
        """Token ids and the character span of each token, eagerly.

        Args:
            texts: list of str.

        Returns:
            `(ids, offsets)`: per text a list of ids and a list of
            `(start, end)` character offsets into the text, leading
            whitespace excluded (the span of `"Ġfox"` in `"a fox"` is
            `(2, 5)`).
        """
        self._check_vocabulary()
        self._maybe_initialized_tokenizers()
        encodings = self._tokenizer.encode_batch(list(texts))
        all_ids, all_offsets = [], []
        for text, encoding in zip(texts, encodings):
            offsets = []
            for start, end in encoding.offsets:
                while start < end and text[start].isspace():
                    start += 1
                offsets.append((start, end))
            all_ids.append(list(encoding.ids))
            all_offsets.append(offsets)
        return all_ids, all_offsets

    def _encode_flat(self, strings):
        """Eager helper for `tf.py_function`: flat ids and row lengths."""
        self._maybe_initialized_tokenizers()
        texts = [s.decode("utf-8") for s in strings.numpy().tolist()]
        encodings = self._tokenizer.encode_batch(texts)
        if self.compute_dtype == "string":
            rows = [e.tokens for e in encodings]
            values = np.array([t for row in rows for t in row], dtype=object)
        else:
            rows = [e.ids for e in encodings]
            values = np.array(
                [t for row in rows for t in row], dtype=self.compute_dtype
            )
        lengths = np.array([len(row) for row in rows], dtype="int64")
        return values, lengths

    def _tokenize_graph(self, inputs):
        """The exact tokenizer in a traced TF function (e.g. `tf.data`)."""
        inputs = tf.convert_to_tensor(inputs, dtype=tf.string)
        rank = inputs.shape.rank
        if rank is None:
            raise ValueError("`MegaTokenizer` inputs need a known rank.")
        out_dtype = (
            tf.string
            if self.compute_dtype == "string"
            else (tf.as_dtype(self.compute_dtype))
        )
        values, lengths = tf.py_function(
            self._encode_flat, [tf.reshape(inputs, [-1])], [out_dtype, tf.int64]
        )
        values.set_shape([None])
        lengths.set_shape([None])
        tokens = tf.RaggedTensor.from_row_lengths(values, lengths)
        if rank == 0:
            if self.sequence_length:
                return self._pad_dense(tokens)[0]
            return tokens[0]
        shape = tf.shape(inputs, out_type=tf.int64)
        for axis in range(rank - 1, 0, -1):
            tokens = tf.RaggedTensor.from_uniform_row_length(
                tokens, shape[axis]
            )
        if self.sequence_length:
            tokens = self._pad_dense(tokens)
        return tokens

    def _pad_dense(self, tokens):
        output_shape = tokens.shape.as_list()
        output_shape[-1] = self.sequence_length
        pad = getattr(self, "pad_token_id", 0)
        if self.compute_dtype == "string":
            pad = ""
        return tokens.to_tensor(default_value=pad, shape=output_shape)
