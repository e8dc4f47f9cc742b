"""Packed documents: many documents per row, each seen on its own.

`pack_documents` lays token id lists end to end in rows, with the
`document_ids` a `MegaBackbone(document_packing=True)` reads;
`DocumentPacking` is `packing=True` of the LM preprocessors.
"""

import numpy as np

from keras_mega.models.mega_preprocessing_utils import as_string_batch
from keras_mega.models.mega_preprocessing_utils import in_tf_graph
from keras_mega.models.mega_preprocessing_utils import run_in_tf_graph
from keras_mega.models.mega_preprocessing_utils import tf
from keras_mega.models.mega_preprocessing_utils import to_python

PACKED_FIELDS = (
    "token_ids",
    "padding_mask",
    "document_ids",
    "next_ids",
    "next_weights",
)


def pack_documents(documents, sequence_length, pad_token_id):
    """Packs token id lists into rows of `sequence_length`, in order.

    The documents are laid end to end and the stream is cut every
    `sequence_length` tokens: no token is dropped and only the last row is
    padded. A document that crosses the end of a row goes on at the start
    of the next one, where it is a document of its own: the model sees no
    context across the cut (the EMA and attention restart), but every
    token is kept, and `next_ids` still names each token's successor.

    Args:
        documents: list of lists of int token ids.
        sequence_length: int. Row length.
        pad_token_id: int.

    Returns:
        A dict of int32 arrays `[rows, sequence_length]`: `token_ids`,
        `padding_mask`, `document_ids` (0, 1, ... in each row; padding
        gets an id of its own), and `next_ids` / `next_weights`: the next
        token of the same document (1) or none (0: a document's last
        token, padding), for next-token labels.
    """
    if sequence_length < 1:
        raise ValueError(
            f"sequence_length must be positive, got {sequence_length}."
        )
    lengths = [len(d) for d in documents]
    total = sum(lengths)
    rows = max(1, -(-total // sequence_length))
    size = rows * sequence_length
    tokens = np.full(size, pad_token_id, "int32")
    documents_of = np.full(size, -1, "int64")
    if total:
        tokens[:total] = np.concatenate(
            [np.asarray(d, "int32") for d in documents if len(d)]
        )
        documents_of[:total] = np.repeat(np.arange(len(documents)), lengths)
    same = documents_of[1:] == documents_of[:-1]
    next_weights = np.concatenate([same & (documents_of[:-1] >= 0), [False]])
    next_ids = np.where(
        next_weights, np.concatenate([tokens[1:], [pad_token_id]]), pad_token_id
    )
    shape = (rows, sequence_length)
    documents_of = documents_of.reshape(shape)
    padding_mask = documents_of >= 0
    # Per row: a new id at every boundary (the cut included), padding last.
    change = np.ones(shape, bool)
    change[:, 1:] = documents_of[:, 1:] != documents_of[:, :-1]
    document_ids = np.cumsum(change, axis=1) - 1
    return {
        "token_ids": tokens.reshape(shape),
        "padding_mask": padding_mask.astype("int32"),
        "document_ids": document_ids.astype("int32"),
        "next_ids": next_ids.reshape(shape).astype("int32"),
        "next_weights": next_weights.reshape(shape).astype("int32"),
    }


class DocumentPacking:
    """`packing=True` for the LM preprocessors: a batch of documents
    (strings) becomes rows of `sequence_length` tokens with their
    `document_ids` (`pack_documents`), for a
    `MegaBackbone(document_packing=True)`.

    A batch of `n` strings gives as many rows as its tokens fill, so row
    batches vary in size; in a `tf.data` pipeline, rebatch after the
    preprocessor (`ds.map(preprocessor).unbatch().batch(k)`) for a fixed
    batch size. Subclasses give `_packed_outputs(packed)`.
    """

    def _tokenized_documents(self, strings):
        strings, _ = as_string_batch(strings, "x")
        start, end = self.tokenizer.start_token_id, self.tokenizer.end_token_id
        documents = []
        for ids in to_python(self.tokenizer(strings)):
            ids = [int(i) for i in ids]
            if getattr(self, "add_start_token", True):
                ids = [start] + ids
            if getattr(self, "add_end_token", True):
                ids = ids + [end]
            documents.append(ids)
        return documents

    def _pack(self, strings):
        packed = pack_documents(
            self._tokenized_documents(strings),
            self.sequence_length,
            self.tokenizer.pad_token_id,
        )
        return tuple(packed[name] for name in PACKED_FIELDS)

    def _packed_call(self, x, y=None, sample_weight=None):
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__}(packing=True) makes its own labels "
                "from the packed documents: pass only `x`, a batch of "
                "strings (one document each)."
            )
        if isinstance(x, (tuple, list)) and len(x) == 1:
            x = x[0]
        if in_tf_graph():
            spec = tf.TensorSpec([None, self.sequence_length], tf.int32)
            first = x
            if not isinstance(first, tf.RaggedTensor):
                first = tf.convert_to_tensor(first)
            if first.shape.rank == 0:
                first = first[None]
            outputs = run_in_tf_graph(
                self._pack, [first], [spec] * len(PACKED_FIELDS)
            )
        else:
            outputs = self._pack(x)
        return self._packed_outputs(dict(zip(PACKED_FIELDS, outputs)))
