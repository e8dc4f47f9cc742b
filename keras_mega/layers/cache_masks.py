"""Which cached keys a decoding step's queries attend to.

The masks, positions and softmax divisors of `MegaAttentionCache`'s steps:
against a chunked window (the chunk of the last token fed, then the new
block), an unchunked one (slot = position), or a packed one (documents).
"""

from keras import ops


def window_start(position, chunk_size):
    """Position of the first slot of an unpacked chunked cache: the
    start of the chunk of `position`."""
    return position - position % chunk_size


def cached_keys(position, block, window, chunk_size):
    """Mask, positions and divisors of `block` new queries against
    the cached window followed by themselves (chunked), or against the
    window they were written into (unchunked: slot = position)."""
    query_pos = position + ops.arange(block, dtype="int32")
    if not chunk_size:
        key_pos = ops.arange(window, dtype="int32")
        # Causality also masks the slots not fed yet.
        allowed = key_pos[None, :] <= query_pos[:, None]
        lengths = ops.cast(query_pos + 1, "float32")[:, None]
        return allowed[None, None], query_pos, key_pos, lengths
    window_pos = window_start(position, chunk_size) + ops.arange(
        window, dtype="int32"
    )
    key_pos = ops.concatenate([window_pos, query_pos])
    valid = ops.concatenate([window_pos < position, ops.ones((block,), "bool")])
    allowed = ops.logical_and(
        valid[None, :], key_pos[None, :] <= query_pos[:, None]
    )
    same_chunk = (
        key_pos[None, :] // chunk_size == query_pos[:, None] // chunk_size
    )
    allowed = ops.logical_and(allowed, same_chunk)
    query_pos, key_pos = query_pos % chunk_size, key_pos % chunk_size
    lengths = ops.cast(query_pos + 1, "float32")[:, None]
    return allowed[None, None], query_pos, key_pos, lengths


def packed_cached_keys(groups, key_groups, position, block, window, chunk_size):
    """`cached_keys` for a packed cache; also the key groups."""
    if chunk_size:
        # Slots hold the last `window` tokens: positions relative to
        # the first slot.
        query_pos = window + ops.arange(block, dtype="int32")
        key_pos = ops.arange(window + block, dtype="int32")
    else:
        # The window holds the block at its positions (slot = position).
        query_pos = position + ops.arange(block, dtype="int32")
        key_pos = ops.arange(window, dtype="int32")
        valid = key_pos < position + block
        key_groups = ops.where(valid[None], key_groups, -1)
    allowed = ops.logical_and(
        key_groups[:, None, :] == groups[:, :, None],
        (key_pos[None, :] <= query_pos[:, None])[None],
    )
    lengths = ops.sum(ops.cast(allowed, "float32"), -1, keepdims=True)
    lengths = ops.maximum(lengths, 1.0)[:, None]
    return allowed[:, None], query_pos, key_pos, lengths, key_groups
