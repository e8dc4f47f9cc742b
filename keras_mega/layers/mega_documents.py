"""Packed documents: where each document starts, and what may see what.

A packed row holds several documents; `document_ids` `[B, L]` labels them
and each maximal run of equal ids is one document (so `[0, 0, 1, 0]` holds
three). Nothing may cross a document boundary: the EMA restarts at every
boundary and attention is masked to the same document. Chunked attention
is chunked from each document's own start, as if it ran alone.
"""

from keras import ops


def check_document_ids(document_ids, token_ids=None, name="document_ids"):
    """Raises a `ValueError` unless `document_ids` is an int `[B, L]` tensor
    shaped like `token_ids` (when given)."""
    shape = tuple(getattr(document_ids, "shape", ()))
    dtype = str(getattr(document_ids, "dtype", ""))
    if len(shape) != 2:
        raise ValueError(
            f"`{name}` must be an int tensor [batch, length] (one document id "
            f"per token). Received shape {shape}."
        )
    if "int" not in dtype:
        raise ValueError(
            f"`{name}` must hold integer ids (int32 or int64); received dtype "
            f"{dtype}. Cast it with `.astype('int32')`."
        )
    if token_ids is not None:
        expected = tuple(getattr(token_ids, "shape", ()))
        if len(expected) == 2 and any(
            a is not None and b is not None and a != b
            for a, b in zip(shape, expected)
        ):
            raise ValueError(
                f"`{name}` has shape {shape} but `token_ids` has shape "
                f"{expected}: give one document id per token."
            )
    return document_ids


UNEXPECTED_DOCUMENT_IDS = (
    "Got `document_ids`, but this MegaBackbone was built without "
    "document_packing=True, so it would attend across documents. "
    "Build it with MegaBackbone(..., document_packing=True), or "
    "drop `document_ids`."
)


def check_document_inputs(inputs, document_packing):
    """Raises a `ValueError` unless a backbone input dict has checked
    `document_ids` exactly when the backbone packs documents."""
    if "document_ids" in inputs and not document_packing:
        raise ValueError(UNEXPECTED_DOCUMENT_IDS)
    if document_packing:
        if inputs.get("document_ids") is None:
            raise ValueError(
                "This MegaBackbone has document_packing=True: its inputs "
                "need `document_ids` (int [batch, length], one id per "
                "token, each maximal run of equal ids one document). For "
                "unpacked rows pass zeros, e.g. "
                "np.zeros_like(token_ids)."
            )
        check_document_ids(inputs["document_ids"], inputs.get("token_ids"))


def decoding_document_ids(document_ids, token_ids, document_packing):
    """Checked `document_ids` for a backbone's `prefill`/`call_with_cache`:
    zeros (each row one document) when packing and none are given."""
    if not document_packing:
        if document_ids is not None:
            raise ValueError(UNEXPECTED_DOCUMENT_IDS)
        return None
    if document_ids is None:
        return ops.zeros_like(token_ids, dtype="int32")
    return check_document_ids(document_ids, token_ids)


def document_boundaries(document_ids, previous_ids=None):
    """bool `[B, L]`: True where a new document starts.

    Position 0 starts one unless `previous_ids` `[B]` (the id of the token
    before, when decoding) equals its id.
    """
    ids = ops.cast(document_ids, "int32")
    if previous_ids is None:
        first = ops.ones_like(ids[:, :1], "bool")
    else:
        previous = ops.cast(previous_ids, "int32")[:, None]
        first = ops.not_equal(ids[:, :1], previous)
    return ops.concatenate(
        [first, ops.not_equal(ids[:, 1:], ids[:, :-1])], axis=1
    )


def document_runs(document_ids):
    """int32 `[B, L]`: a distinct label per document (0, 1, ... per row)."""
    change = ops.cast(document_boundaries(document_ids), "int32")
    return ops.cumsum(change, axis=1) - 1


def positions_in_documents(document_ids, previous=None):
    """int32 `[B, L]`: each token's position inside its own document.

    Args:
        document_ids: int `[B, L]`.
        previous: optional `(ids [B], positions [B])` of the token before
            the first one (decoding): a continued document counts on.
    """
    ids = ops.cast(document_ids, "int32")
    previous_ids = None if previous is None else previous[0]
    runs = ops.cumsum(
        ops.cast(document_boundaries(ids, previous_ids), "int32"), axis=1
    )
    batch_size, length = ops.shape(ids)[0], ops.shape(ids)[1]
    # A document starts where its run label first occurs: one sorted
    # search over the rows laid end to end (labels offset per row).
    offset = ops.arange(batch_size, dtype="int32")[:, None] * (length + 1)
    flat = ops.reshape(runs + offset, (-1,))
    start = ops.searchsorted(flat, flat, side="left")
    start = ops.reshape(ops.cast(start, "int32"), ops.shape(ids))
    rows = ops.arange(batch_size, dtype="int32")[:, None] * length
    index = ops.arange(length, dtype="int32")[None]
    positions = index - (start - rows)
    if previous is not None:
        # Tokens before the first boundary continue the previous document.
        continued = index + 1 + ops.cast(previous[1], "int32")[:, None]
        positions = ops.where(runs == 0, continued, positions)
    return positions


def attention_groups(positions, chunk_size=None, offset=0):
    """int32 `[B, L]`: the row position where each token's attention group
    starts; two tokens may attend to each other iff their groups are equal.

    A group is a document, or with `chunk_size` a chunk of a document
    counted from the document's start.

    Args:
        positions: `positions_in_documents` of the tokens.
        chunk_size: int or None.
        offset: int or scalar tensor: row position of the first token.
    """
    index = ops.arange(ops.shape(positions)[1], dtype="int32")[None]
    index = index + ops.cast(offset, "int32")
    if chunk_size:
        return index - positions % chunk_size
    return index - positions
