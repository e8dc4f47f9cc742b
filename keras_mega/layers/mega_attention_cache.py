"""Decoding `MegaGatedAttention` with a cache: prefill and feed blocks."""

from keras import ops

from keras_mega.layers.cache_masks import cached_keys
from keras_mega.layers.cache_masks import packed_cached_keys
from keras_mega.layers.cache_masks import window_start
from keras_mega.layers.mega_documents import attention_groups
from keras_mega.layers.mega_documents import check_document_ids
from keras_mega.layers.mega_documents import positions_in_documents


class MegaAttentionCache:
    """The cached decoding of `MegaGatedAttention` (a mixin of it).

    A cache is `(ema_state [B, D, N] float32, keys [B, W, Z],
    values [B, W, H])`, `W = chunk_size`, or the longest length served
    without chunking: its size does not grow with the decoded length when
    attention is chunked. Without chunking slot `i` holds position `i`
    and a step writes its block in place (`slice_update`), so that its
    cost grows linearly with the window. A packed cache (documents, see
    `empty_cache`) has two more entries.
    """

    def _check_decodable(self):
        if not self.causal or self.bidirectional:
            raise ValueError(
                "Decoding with a cache needs a causal model with a "
                "unidirectional EMA (causal=True, bidirectional=False); this "
                f"layer has causal={self.causal}, "
                f"bidirectional={self.bidirectional}."
            )

    def cache_window(self, max_length):
        """Key/value slots a cache keeps: one chunk, or the whole length."""
        if self.chunk_size:
            return self.chunk_size
        if (
            self.relative_position_bias == "simple"
            and isinstance(max_length, int)
            and max_length > self.max_sequence_length
        ):
            raise ValueError(
                f"Cannot decode {max_length} tokens with the simple relative "
                "bias, which supports max_sequence_length="
                f"{self.max_sequence_length}. Raise `max_sequence_length`, "
                "use chunking or the rotary bias."
            )
        return max_length

    def prefill(
        self,
        x,
        padding_mask=None,
        position=0,
        max_length=None,
        document_ids=None,
    ):
        """The full forward, plus the cache for decoding from `position`.

        Args:
            x: `[B, L, hidden_dim]`.
            padding_mask: `[B, L]`, 1 = keep.
            position: int (or scalar tensor): the first position the cache
                will be fed. The cache holds the EMA state after the tokens
                before `position` (not after all of `x`: keras-hub's sampler
                feeds the token at `position` again) and their keys/values in
                the current chunk.
            max_length: int. Positions the cache must serve when attention
                is not chunked (defaults to `L`).
            document_ids: optional int `[B, L]`, packed documents: the
                cache is then a packed one (see `call_with_cache`).

        Returns:
            `(output [B, L, hidden_dim], cache)`, `cache` a tuple
            `(ema_state [B, D, N] float32, keys [B, W, Z], values [B, W, H])`
            with `W = chunk_size`, or `max_length` without chunking. With
            `document_ids` it has two more entries, see `empty_cache`.
        """
        self._check_decodable()
        window = self.cache_window(max_length or ops.shape(x)[1])
        out, _, (normed, key, value) = self._forward(
            x, padding_mask, document_ids, False
        )
        ema_state = self.ema_gate.state_at(
            normed, position, padding_mask, document_ids=document_ids
        )
        if document_ids is not None:
            cache = self._packed_prefill_cache(
                key, value, padding_mask, document_ids, position, window
            )
            return out, (ema_state,) + cache
        start = position - position % self.chunk_size if self.chunk_size else 0
        # Slots at or after `position` are not fed yet: zero them.
        seen = start + ops.arange(window) < position
        key_window, value_window = [
            ops.where(
                seen[None, :, None],
                ops.slice(
                    ops.pad(t, [[0, 0], [0, window], [0, 0]]),
                    (0, start, 0),
                    (ops.shape(t)[0], window, ops.shape(t)[2]),
                ),
                0,
            )
            for t in (key, value)
        ]
        return out, (ema_state, key_window, value_window)

    def _packed_prefill_cache(
        self, key, value, padding_mask, document_ids, position, window
    ):
        """The packed cache after the tokens before `position`, less its
        EMA state."""
        batch_size = ops.shape(key)[0]
        positions = positions_in_documents(document_ids)
        groups = attention_groups(positions, self.chunk_size)
        if padding_mask is not None:
            groups = ops.where(ops.cast(padding_mask, "bool"), groups, -1)
        position = ops.convert_to_tensor(position, "int32")
        if self.chunk_size:
            # The last `window` tokens before `position`.
            start, slot = position, position - window + ops.arange(window)
            widths = [window, 0]
        else:
            start, slot = 0, ops.arange(window)
            widths = [0, window]
        seen = ops.logical_and(slot >= 0, slot < position)[None]

        def take(t, fill):
            rest = [[0, 0]] * (len(t.shape) - 2)
            t = ops.pad(t, [[0, 0], widths] + rest, constant_values=fill)
            size = (batch_size, window) + tuple(ops.shape(t)[2:])
            begin = (0, start) + (0,) * (len(t.shape) - 2)
            t = ops.slice(t, begin, size)
            mask = seen if len(t.shape) == 2 else seen[..., None]
            return ops.where(mask, t, fill)

        last = ops.maximum(position - 1, 0)[None]
        last_ids = ops.take(ops.cast(document_ids, "int32"), last, axis=1)
        last_positions = ops.where(
            position > 0, ops.take(positions, last, axis=1), -1
        )
        return (
            take(key, 0),
            take(value, 0),
            take(groups, -1),
            ops.concatenate([last_ids, last_positions], axis=1),
        )

    def empty_cache(self, batch_size, max_length, document_packing=False):
        """A cache for decoding from position 0.

        With `document_packing` the cache has two more entries: the
        attention group of each cached key `[B, W]` int32 (-1: empty slot;
        see `mega_documents.attention_groups`) and, per row, the document
        id and the position in its document of the last token fed
        `[B, 2]` int32. With chunking its keys are then the last `W` tokens
        (a document's chunk can straddle two chunks of the row).
        """
        self._check_decodable()
        window = self.cache_window(max_length)
        cache = (
            self.ema_gate.initial_state(batch_size),
            ops.zeros(
                (batch_size, window, self.shared_dim), self.compute_dtype
            ),
            ops.zeros(
                (batch_size, window, self.intermediate_dim), self.compute_dtype
            ),
        )
        if not document_packing:
            return cache
        return cache + (
            ops.full((batch_size, window), -1, "int32"),
            ops.tile(
                ops.convert_to_tensor([[0, -1]], "int32"), (batch_size, 1)
            ),
        )

    def call_with_cache(self, x, cache, position, document_ids=None):
        """Feeds the tokens at `position, ..., position + T - 1`.

        Equals `call()` on the whole sequence at these positions. The block
        may cross chunk boundaries; memory stays one chunk of keys/values
        plus the EMA state when attention is chunked.

        Args:
            x: `[B, T, hidden_dim]`, T >= 1 new tokens (all real).
            cache: from `prefill()`, `empty_cache()` or a previous call.
            position: int or scalar int tensor, position of `x[:, 0]`.
            document_ids: optional int `[B, T]`, the new tokens' documents,
                for a packed cache (from `prefill(document_ids=...)` or
                `empty_cache(document_packing=True)`). A token whose id
                differs from the previous token's starts a new document:
                the EMA restarts and the keys of the earlier document are
                masked. `None` continues the last document.

        Returns:
            `(output [B, T, hidden_dim], new_cache)`.
        """
        self._check_decodable()
        packed = len(cache) == 5
        if document_ids is not None and not packed:
            raise ValueError(
                "`document_ids` needs a packed cache: build it with "
                "`prefill(..., document_ids=...)` or "
                "`empty_cache(..., document_packing=True)`."
            )
        ema_state, key_window, value_window = cache[:3]
        block, window = ops.shape(x)[1], ops.shape(key_window)[1]
        ints = (position, block, window)
        if not self.chunk_size and all(isinstance(v, int) for v in ints):
            if position + block > window:
                raise ValueError(
                    f"Positions {position} to {position + block - 1} do not "
                    f"fit the cache, which holds {window} positions without "
                    "chunking. Build it with a larger `max_length` "
                    "(`empty_cache`/`prefill`)."
                )
        position = ops.convert_to_tensor(position, "int32")
        ema_documents = {}
        if packed:
            last = cache[4]
            if document_ids is None:
                document_ids = ops.tile(last[:, :1], (1, block))
            check_document_ids(document_ids, x[..., 0])
            document_ids = ops.cast(document_ids, "int32")
            ema_documents = dict(
                document_ids=document_ids, previous_document_ids=last[:, 0]
            )
        residual, normed, value = self._project(x, False)
        ema_output, ema_state = self.ema_gate.step(
            normed, ema_state, **ema_documents
        )
        u, r, hx, query, key = self._gates(ema_output, False)
        key = ops.cast(key, key_window.dtype)
        value = ops.cast(value, value_window.dtype)
        if self.chunk_size:
            # One chunk (plus the block): the window followed by the block.
            keys = ops.concatenate([key_window, key], 1)
            values = ops.concatenate([value_window, value], 1)
        else:
            # Slot = position: the block is written in place and attention
            # reads the updated window, so that a step costs O(window), not
            # a concatenation and a gather of it.
            keys = ops.slice_update(key_window, (0, position, 0), key)
            values = ops.slice_update(value_window, (0, position, 0), value)
        key_groups = None
        if packed:
            positions = positions_in_documents(
                document_ids, previous=(last[:, 0], last[:, 1])
            )
            groups = attention_groups(
                positions, self.chunk_size, offset=position
            )
            if self.chunk_size:
                key_groups = ops.concatenate([cache[3], groups], axis=1)
            else:
                key_groups = ops.slice_update(cache[3], (0, position), groups)
            allowed, query_pos, key_pos, lengths, key_groups = (
                packed_cached_keys(
                    groups, key_groups, position, block, window, self.chunk_size
                )
            )
        else:
            allowed, query_pos, key_pos, lengths = cached_keys(
                position, block, window, self.chunk_size
            )
        attended, _ = self.attend(
            query[:, None],
            keys[:, None],
            values[:, None],
            allowed,
            query_pos,
            key_pos,
            lengths,
        )
        out = self._output(residual, u, r, hx, attended[:, 0], False)
        if self.chunk_size:
            keys, values, key_groups = self._chunk_windows(
                position, block, window, keys, values, key_groups
            )
        # Unchunked, the updated windows are the cache (`key_groups`: -1
        # at the slots not fed yet).
        new_cache = (ema_state, keys, values)
        if not packed:
            return out, new_cache
        last = ops.stack([document_ids[:, -1], positions[:, -1]], axis=1)
        return out, new_cache + (key_groups, last)

    def _chunk_windows(
        self, position, block, window, keys, values, key_groups=None
    ):
        """The new windows of a chunked cache from the window followed by
        the block: the chunk of the last token fed, or with a packed cache
        (`key_groups` given) the last `window` tokens and their groups."""
        if key_groups is not None:
            index = block + ops.arange(window)
        else:
            start = window_start(position, self.chunk_size)
            slot_pos = window_start(
                position + block - 1, self.chunk_size
            ) + ops.arange(window)
            index = ops.where(
                slot_pos < position,
                slot_pos - start,
                window + slot_pos - position,
            )
            index = ops.clip(index, 0, window + block - 1)
        if key_groups is not None:
            key_groups = ops.take(key_groups, index, axis=1)
        return (
            ops.take(keys, index, axis=1),
            ops.take(values, index, axis=1),
            key_groups,
        )
