"""Mega's moving-average equipped gated attention (paper section 3.2)."""

import keras
from keras import ops

from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.functional import element_attention_function
from keras_mega.layers.mega_documents import attention_groups
from keras_mega.layers.mega_documents import check_document_ids
from keras_mega.layers.mega_documents import positions_in_documents
from keras_mega.layers.mega_ema import MegaEMA
from keras_mega.layers.mega_sublayer import MegaAttentionSublayer

# Finite stand-in for -inf: exp() of it is exactly 0 in float32, and a row
# with no allowed key stays finite instead of turning into NaN.
MASK_VALUE = -1e9


def attention_weights(scores, allowed, attention_activation):
    """Turns float32 scores `[B, n, Q, K]` into attention weights.

    Args:
        scores: `q k^T` (scaled for softmax, divided by the number of keys for
            element attention) plus the relative bias.
        allowed: bool, broadcastable to `scores`: which keys each query sees.
        attention_activation: "softmax", "laplace" or "relu2".
    """
    if attention_activation == "softmax":
        return ops.softmax(ops.where(allowed, scores, MASK_VALUE), axis=-1)
    weights = element_attention_function(attention_activation)(scores)
    return weights * ops.cast(allowed, "float32")


def padding_allowed(key_mask, unmask_empty_rows):
    """`[B, n, 1, K]` from a chunked key mask `[B, n, K]`.

    With `unmask_empty_rows` (softmax), a chunk with no real key at all
    attends to all of its keys, as fairseq and HF do.
    """
    if unmask_empty_rows:
        empty = ops.logical_not(ops.any(key_mask, axis=-1, keepdims=True))
        key_mask = ops.logical_or(key_mask, empty)
    return key_mask[:, :, None, :]


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaGatedAttention(MegaAttentionSublayer):
    """Moving-average equipped gated attention, Mega's main sublayer.

    The EMA output drives single-head attention and its gates (paper eq.
    11-16):

        x' = norm(x) (pre-norm) ;  v = act(W_v x')
        m = EMA(x') ;  u, (z, r), hx = sigmoid, silu, id of W_m m
        q = z * k_q + b_q ;  k = z * k_k + b_k
        h = act(hx + W_h((attention(q, k) @ v) * r))
        y = x + u * (h - x)  (then norm(y) for post-norm)

    Attention is `softmax`, `laplace` or `relu2`, causal or not, over the
    whole sequence or over independent chunks of `chunk_size` tokens. Any
    length works with chunking: the sequence is padded to a chunk multiple
    (the padding masked) and the padding stripped again.

    Weight and sublayer names follow HF's `MegaMovingAverageGatedAttention`.

    Args:
        hidden_dim: int. Model width `D`.
        intermediate_dim: int. Width of the values `H` (HF
            `intermediate_size`).
        shared_dim: int. Width of the shared query/key representation `Z`
            (HF `shared_representation_size`).
        ema_dim: int. EMA dimensions per channel (HF `ema_projection_size`).
        bidirectional: bool. Bidirectional EMA.
        causal: bool. Causal attention (HF `is_decoder`).
        chunk_size: int or None. Attention chunk size; None attends over the
            whole sequence.
        truncation: int or None. EMA kernel truncation.
        attention_activation: "softmax", "laplace" or "relu2".
        relative_position_bias: "rotary" or "simple".
        max_sequence_length: int. Sizes the simple bias (HF `max_positions`).
        normalization_type: see `keras_mega.layers.NORMALIZATION_TYPES`.
        norm_affine: bool. Learned norm scale/shift.
        normalize_before: bool. Pre-norm (True) or post-norm.
        activation: str. Activation of values and output (HF `activation`).
        dropout: float. Dropout of EMA output and sublayer output.
        hidden_dropout: float. Dropout of the values.
        attention_dropout: float. Dropout of the attention weights.
        feature_dropout: bool. Drop whole channels in `dropout` and
            `hidden_dropout`.
        initializer_range: float. Init std of projections and biases.
        ema_delta_alpha_range, ema_beta_range, ema_gamma_omega_range,
            ema_init, ema_max_timescale: EMA initialization, see `MegaEMA`.

    Example:
    >>> layer = MegaGatedAttention(hidden_dim=16, intermediate_dim=32,
    ...     shared_dim=8, ema_dim=4, chunk_size=4)
    >>> layer(keras.random.normal((2, 10, 16))).shape
    (2, 10, 16)
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        shared_dim=64,
        ema_dim=16,
        bidirectional=False,
        causal=False,
        chunk_size=None,
        truncation=None,
        attention_activation="softmax",
        relative_position_bias="rotary",
        max_sequence_length=2048,
        normalization_type="scalenorm",
        norm_affine=True,
        normalize_before=True,
        activation="silu",
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        feature_dropout=False,
        initializer_range=0.02,
        ema_delta_alpha_range=0.2,
        ema_beta_range=0.02,
        ema_gamma_omega_range=1.0,
        ema_init="paper",
        ema_max_timescale=1024.0,
        **kwargs,
    ):
        super().__init__(
            hidden_dim,
            shared_dim=shared_dim,
            chunk_size=chunk_size,
            attention_activation=attention_activation,
            relative_position_bias=relative_position_bias,
            max_sequence_length=max_sequence_length,
            hidden_dropout=hidden_dropout,
            attention_dropout=attention_dropout,
            normalization_type=normalization_type,
            norm_affine=norm_affine,
            normalize_before=normalize_before,
            activation=activation,
            dropout=dropout,
            feature_dropout=feature_dropout,
            initializer_range=initializer_range,
            **kwargs,
        )
        self.intermediate_dim = int(intermediate_dim)
        self.ema_dim = int(ema_dim)
        self.bidirectional = bool(bidirectional)
        self.causal = bool(causal)
        self.truncation = check_positive_or_none("truncation", truncation)
        self.ema_delta_alpha_range = ema_delta_alpha_range
        self.ema_beta_range = ema_beta_range
        self.ema_gamma_omega_range = ema_gamma_omega_range
        self.ema_init = ema_init
        self.ema_max_timescale = ema_max_timescale

        # === Layers ===
        self.ema_gate = MegaEMA(
            hidden_dim,
            ema_dim=ema_dim,
            bidirectional=bidirectional,
            truncation=truncation,
            ema_delta_alpha_range=ema_delta_alpha_range,
            ema_beta_range=ema_beta_range,
            ema_gamma_omega_range=ema_gamma_omega_range,
            ema_init=ema_init,
            ema_max_timescale=ema_max_timescale,
            name="ema_gate",
            dtype=self.dtype_policy,
        )
        self.v_proj = self.dense(intermediate_dim, "v_proj")
        self.mx_proj = self.dense(
            shared_dim + intermediate_dim + 2 * hidden_dim, "mx_proj"
        )
        self.h_proj = self.dense(hidden_dim, "h_proj")

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        self.norm.build(shape)
        self.ema_gate.build(shape)
        self.v_proj.build(shape)
        self.mx_proj.build(shape)
        self.h_proj.build((None, None, self.intermediate_dim))
        self.rel_pos_bias.build()
        self.qk_weight = self.add_weight(
            name="qk_weight",
            shape=(2, self.shared_dim),
            initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_range
            ),
        )
        self.qk_bias = self.add_weight(
            name="qk_bias", shape=(2, self.shared_dim), initializer="zeros"
        )
        self.built = True

    def _gates(self, x, ema_output, training):
        """Splits the EMA projection into gates, queries, keys."""
        base = self.mx_proj(self.dropout_layer(ema_output, training=training))
        d, z = self.hidden_dim, self.shared_dim
        u, zr, hx = ops.split(base, [d, d + z + self.intermediate_dim], axis=-1)
        u = ops.sigmoid(u)
        zr = ops.silu(zr)  # HF and fairseq use SiLU here, whatever `activation`
        shared, r = ops.split(zr, [z], axis=-1)
        # Cast by hand: `call_with_cache` runs outside Keras' autocast scope.
        weight = ops.cast(self.qk_weight, shared.dtype)
        bias = ops.cast(self.qk_bias, shared.dtype)
        query = shared * weight[0] + bias[0]
        key = shared * weight[1] + bias[1]
        return u, r, hx, query, key

    def _output(self, residual, u, r, hx, attended, training):
        h = self.activation_fn(hx + self.h_proj(attended * r))
        h = self.dropout_layer(h, training=training)
        out = residual + u * (h - residual)
        if not self.normalize_before:
            out = self.norm(out, training=training)
        return out

    def attend(
        self,
        query,
        key,
        value,
        allowed,
        query_positions,
        key_positions,
        key_mask=None,
        training=None,
        lengths=None,
    ):
        """Single-head attention, chunk by chunk.

        Args:
            query: `[B, n, Q, Z]`. key: `[B, n, K, Z]`. value: `[B, n, K, H]`.
            allowed: bool broadcastable to `[B, n, Q, K]`.
            query_positions, key_positions: `[Q]`, `[K]` int positions inside
                the chunk (whole sequence when unchunked), for the relative
                bias (the rotary bias is folded into the `q k^T` matmul) and
                the causal length of element attention.
            key_mask: `[B, n, K]` bool, real keys: the divisor of
                non-causal element attention (else all keys count).
            lengths: optional float32 `[B, n, Q, 1]`: the divisor of element
                attention, given (packed documents) instead of derived.

        Returns:
            `(output [B, n, Q, H], weights [B, n, Q, K] float32)`.
        """
        query = ops.cast(query, "float32")
        key = ops.cast(key, "float32")
        if self.attention_activation == "softmax":
            query = query * self.shared_dim**-0.5
        elif lengths is not None:
            query = query / lengths
        else:
            # Divide by the number of keys a query sees: causal, its
            # position + 1; else the chunk's real keys (HF, fairseq).
            if self.causal:
                lengths = ops.cast(query_positions + 1, "float32")[:, None]
            else:
                if key_mask is None:
                    key_mask = ops.ones(ops.shape(key)[:3], "bool")
                lengths = ops.sum(ops.cast(key_mask, "float32"), axis=-1)
                lengths = ops.maximum(lengths, 1.0)[:, :, None, None]
            query = query / lengths
        scores = self.rel_pos_bias.biased_scores(
            query, key, query_positions, key_positions
        )
        weights = attention_weights(scores, allowed, self.attention_activation)
        dropped = self.attention_dropout_layer(weights, training=training)
        dropped = ops.cast(dropped, value.dtype)
        return ops.einsum("bnqk,bnkh->bnqh", dropped, value), weights

    def _attention(
        self, query, key, value, padding_mask, document_ids, training
    ):
        if document_ids is None:
            return self._chunked_attention(
                query, key, value, padding_mask, training
            )
        check_document_ids(document_ids, query[..., 0])
        return self._packed_attention(
            query, key, value, padding_mask, document_ids, training
        )

    def _chunked_attention(self, query, key, value, padding_mask, training):
        """Attention over `[B, L, ...]` inputs, in chunks of `chunk_size`."""
        batch_size, length = ops.shape(query)[0], ops.shape(query)[1]
        if padding_mask is None:
            key_mask = ops.ones((batch_size, length), "float32")
        else:
            key_mask = ops.cast(padding_mask, "float32")
        chunk = self.chunk_size or length
        if isinstance(chunk, int):
            self.rel_pos_bias.check_length(chunk)
        pad = (-length) % chunk if self.chunk_size else 0
        tensors = query, key, value, key_mask
        if not (isinstance(pad, int) and pad == 0):
            tensors = [
                ops.pad(t, [[0, 0], [0, pad]] + [[0, 0]] * (len(t.shape) - 2))
                for t in tensors
            ]

        def chunked(t):
            return ops.reshape(
                t, (batch_size, -1, chunk) + tuple(ops.shape(t)[2:])
            )

        query, key, value, key_mask = [chunked(t) for t in tensors]
        key_mask = ops.cast(key_mask, "bool")
        positions = ops.arange(chunk)
        allowed = padding_allowed(
            key_mask, self.attention_activation == "softmax"
        )
        if self.causal:
            causal = positions[None, :] <= positions[:, None]
            allowed = ops.logical_and(allowed, causal)
        attended, weights = self.attend(
            query,
            key,
            value,
            allowed,
            positions,
            positions,
            key_mask=key_mask,
            training=training,
        )
        attended = ops.reshape(
            attended, (batch_size, -1, self.intermediate_dim)
        )
        return attended[:, :length], weights

    def _packed_attention(
        self, query, key, value, padding_mask, document_ids, training
    ):
        """Attention over packed documents `[B, L, ...]`: each query sees
        the keys of its own document only, and with chunking those of its
        own chunk counted from the document's start (as if it ran alone).

        Such a chunk can straddle two chunks of the row, so each chunk of
        queries looks at a window of keys: the row chunk before, its own
        and (not causal) the one after. Positions inside that window feed
        the relative bias, which depends only on offsets.
        """
        batch_size, length = ops.shape(query)[0], ops.shape(query)[1]
        if padding_mask is None:
            key_mask = ops.ones((batch_size, length), "float32")
        else:
            key_mask = ops.cast(padding_mask, "float32")
        groups = attention_groups(
            positions_in_documents(document_ids), self.chunk_size
        )
        if self.chunk_size:
            chunk = self.chunk_size
            self.rel_pos_bias.check_length(chunk)
            pad = (-length) % chunk
            tensors = [query, key, value, key_mask, groups]
            tensors = [
                ops.pad(
                    t,
                    [[0, 0], [0, pad]] + [[0, 0]] * (len(t.shape) - 2),
                    constant_values=-1 if i == 4 else 0,
                )
                for i, t in enumerate(tensors)
            ]
            tensors = [
                ops.reshape(
                    t, (batch_size, -1, chunk) + tuple(ops.shape(t)[2:])
                )
                for t in tensors
            ]
            query, key, value, key_mask, groups = tensors
            query_groups = groups

            def window(t, fill=0):
                def shifted(part, before):
                    widths = [[0, 0], [1, 0] if before else [0, 1]]
                    widths += [[0, 0]] * (len(t.shape) - 2)
                    return ops.pad(part, widths, constant_values=fill)

                parts = [shifted(t[:, :-1], True), t]
                if not self.causal:
                    parts.append(shifted(t[:, 1:], False))
                return ops.concatenate(parts, axis=2)

            key, value, key_mask = window(key), window(value), window(key_mask)
            key_groups = window(groups, fill=-1)
            query_positions = chunk + ops.arange(chunk)
            key_positions = ops.arange(ops.shape(key)[2])
        else:
            if isinstance(length, int):
                self.rel_pos_bias.check_length(length)
            query, key, value = query[:, None], key[:, None], value[:, None]
            key_mask = key_mask[:, None]
            query_groups = key_groups = groups[:, None]
            query_positions = key_positions = ops.arange(length)
        same = query_groups[:, :, :, None] == key_groups[:, :, None, :]
        if self.causal:
            causal = key_positions[None, :] <= query_positions[:, None]
            same = ops.logical_and(same, causal)
        allowed = ops.logical_and(same, ops.cast(key_mask, "bool")[:, :, None])
        lengths = None
        if self.attention_activation != "softmax":
            # The keys the query would see alone: causal, its position in
            # the chunk + 1; else the chunk's real keys.
            counted = same if self.causal else allowed
            lengths = ops.sum(ops.cast(counted, "float32"), -1, keepdims=True)
            lengths = ops.maximum(lengths, 1.0)
        attended, weights = self.attend(
            query,
            key,
            value,
            allowed,
            query_positions,
            key_positions,
            training=training,
            lengths=lengths,
        )
        attended = ops.reshape(
            attended, (batch_size, -1, self.intermediate_dim)
        )
        return attended[:, :length], weights

    def _project(self, x, padding_mask, training):
        """Norm, values, EMA and gates of `x` `[B, L, D]`."""
        residual = x
        if self.normalize_before:
            x = self.norm(x, training=training)
        value = self.activation_fn(self.v_proj(x))
        value = self.hidden_dropout_layer(value, training=training)
        return residual, x, value

    def call(
        self,
        x,
        padding_mask=None,
        training=None,
        return_attention_scores=False,
        document_ids=None,
    ):
        """`x`: `[B, L, hidden_dim]`; `padding_mask`: `[B, L]`, 1 = keep;
        `document_ids`: optional int `[B, L]`, packed documents (each
        maximal run of equal ids is one; nothing crosses a boundary).

        Returns `[B, L, hidden_dim]`, and with `return_attention_scores` also
        the attention weights `[B, chunks, chunk, chunk]` (one chunk of `L`
        when chunking is off; padding added for chunking included). With
        `document_ids` and chunking each chunk's weights cover a window of
        keys: `[B, chunks, chunk, 2 * chunk]` (causal: the chunk before and
        its own) or `3 * chunk` (and the chunk after).
        """
        residual, x, value = self._project(x, padding_mask, training)
        ema_output = self.ema_gate(
            x, padding_mask=padding_mask, document_ids=document_ids
        )
        u, r, hx, query, key = self._gates(x, ema_output, training)
        attended, weights = self._attention(
            query, key, value, padding_mask, document_ids, training
        )
        out = self._output(residual, u, r, hx, attended, training)
        if return_attention_scores:
            return out, weights
        return out

    # --- Decoding with a cache ---

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
        length = ops.shape(x)[1]
        window = self.cache_window(max_length or length)
        residual, normed, value = self._project(x, padding_mask, False)
        ema_output = self.ema_gate(
            normed, padding_mask=padding_mask, document_ids=document_ids
        )
        u, r, hx, query, key = self._gates(normed, ema_output, False)
        attended, _ = self._attention(
            query, key, value, padding_mask, document_ids, False
        )
        out = self._output(residual, u, r, hx, attended, False)
        if document_ids is not None:
            return out, self._packed_prefill_cache(
                normed, key, value, padding_mask, document_ids, position, window
            )

        ema_state = self.ema_gate.state_at(normed, position, padding_mask)
        start = position - position % self.chunk_size if self.chunk_size else 0
        padded = [
            ops.pad(t, [[0, 0], [0, window], [0, 0]]) for t in (key, value)
        ]
        # Slots at or after `position` are not fed yet: zero them.
        seen = start + ops.arange(window) < position
        key_window, value_window = [
            ops.where(
                seen[None, :, None],
                ops.slice(
                    t, (0, start, 0), (ops.shape(t)[0], window, ops.shape(t)[2])
                ),
                0,
            )
            for t in padded
        ]
        return out, (ema_state, key_window, value_window)

    def _packed_prefill_cache(
        self, normed, key, value, padding_mask, document_ids, position, window
    ):
        """The packed cache after the tokens before `position`."""
        batch_size = ops.shape(key)[0]
        ema_state = self.ema_gate.state_at(
            normed, position, padding_mask, document_ids=document_ids
        )
        positions = positions_in_documents(document_ids)
        groups = attention_groups(positions, self.chunk_size)
        if padding_mask is not None:
            groups = ops.where(ops.cast(padding_mask, "bool"), groups, -1)
        position = ops.convert_to_tensor(position, "int32")
        if self.chunk_size:
            # The last `window` tokens before `position`.
            start, slot = position, position - window + ops.arange(window)
            widths = [[window, 0], [window, 0]]
        else:
            start, slot = 0, ops.arange(window)
            widths = [[0, window], [0, window]]
        seen = ops.logical_and(slot >= 0, slot < position)[None]

        def take(t, fill):
            rest = [[0, 0]] * (len(t.shape) - 2)
            t = ops.pad(t, [[0, 0], widths[0]] + rest, constant_values=fill)
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
            ema_state,
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
        if len(cache) == 5:
            return self._packed_call_with_cache(
                x, cache, position, document_ids
            )
        if document_ids is not None:
            raise ValueError(
                "`document_ids` needs a packed cache: build it with "
                "`prefill(..., document_ids=...)` or "
                "`empty_cache(..., document_packing=True)`."
            )
        ema_state, key_window, value_window = cache
        residual, normed, value = self._project(x, None, False)
        ema_output, ema_state = self.ema_gate.step(normed, ema_state)
        u, r, hx, query, key = self._gates(normed, ema_output, False)

        block = ops.shape(x)[1]
        window = ops.shape(key_window)[1]
        chunk = self.chunk_size or window
        position = ops.convert_to_tensor(position, "int32")
        query_pos = position + ops.arange(block, dtype="int32")
        start = position - position % chunk if self.chunk_size else 0
        window_pos = start + ops.arange(window, dtype="int32")
        key_pos = ops.concatenate([window_pos, query_pos])
        valid = ops.concatenate(
            [window_pos < position, ops.ones((block,), "bool")]
        )
        allowed = ops.logical_and(
            valid[None, :], key_pos[None, :] <= query_pos[:, None]
        )
        if self.chunk_size:
            same_chunk = (
                key_pos[None, :] // chunk == query_pos[:, None] // chunk
            )
            allowed = ops.logical_and(allowed, same_chunk)
        keys = ops.concatenate([key_window, ops.cast(key, key_window.dtype)], 1)
        values = ops.concatenate(
            [value_window, ops.cast(value, value_window.dtype)], 1
        )
        in_chunk = (lambda p: p % chunk) if self.chunk_size else (lambda p: p)
        attended, _ = self.attend(
            query[:, None],
            keys[:, None],
            values[:, None],
            allowed[None, None],
            in_chunk(query_pos),
            in_chunk(key_pos),
        )
        out = self._output(residual, u, r, hx, attended[:, 0], False)

        # The new window: the chunk of the last token fed.
        last = position + block - 1
        new_start = last - last % chunk if self.chunk_size else 0
        slot_pos = new_start + ops.arange(window, dtype="int32")
        index = ops.where(
            slot_pos < position, slot_pos - start, window + slot_pos - position
        )
        index = ops.clip(index, 0, window + block - 1)
        key_window = ops.take(keys, index, axis=1)
        value_window = ops.take(values, index, axis=1)
        return out, (ema_state, key_window, value_window)

    def _packed_call_with_cache(self, x, cache, position, document_ids):
        """`call_with_cache` with a packed cache (see `empty_cache`)."""
        ema_state, key_window, value_window, group_window, last = cache
        batch_size, block = ops.shape(x)[0], ops.shape(x)[1]
        if document_ids is None:
            document_ids = ops.tile(last[:, :1], (1, block))
        check_document_ids(document_ids, x[..., 0])
        document_ids = ops.cast(document_ids, "int32")
        positions = positions_in_documents(
            document_ids, previous=(last[:, 0], last[:, 1])
        )
        position = ops.convert_to_tensor(position, "int32")
        groups = attention_groups(positions, self.chunk_size, offset=position)
        residual, normed, value = self._project(x, None, False)
        ema_output, ema_state = self.ema_gate.step(
            normed,
            ema_state,
            document_ids=document_ids,
            previous_document_ids=last[:, 0],
        )
        u, r, hx, query, key = self._gates(normed, ema_output, False)

        window = ops.shape(key_window)[1]
        keys = ops.concatenate([key_window, ops.cast(key, key_window.dtype)], 1)
        values = ops.concatenate(
            [value_window, ops.cast(value, value_window.dtype)], 1
        )
        key_groups = ops.concatenate([group_window, groups], axis=1)
        if self.chunk_size:
            # Slots hold the last `window` tokens: positions relative to
            # the first slot.
            query_pos = window + ops.arange(block, dtype="int32")
            key_pos = ops.arange(window + block, dtype="int32")
        else:
            query_pos = position + ops.arange(block, dtype="int32")
            window_pos = ops.arange(window, dtype="int32")
            key_pos = ops.concatenate([window_pos, query_pos])
            valid = ops.concatenate(
                [window_pos < position, ops.ones((block,), "bool")]
            )
            key_groups = ops.where(valid[None], key_groups, -1)
        allowed = ops.logical_and(
            key_groups[:, None, :] == groups[:, :, None],
            (key_pos[None, :] <= query_pos[:, None])[None],
        )
        lengths = ops.sum(ops.cast(allowed, "float32"), -1, keepdims=True)
        attended, _ = self.attend(
            query[:, None],
            keys[:, None],
            values[:, None],
            allowed[:, None],
            query_pos,
            key_pos,
            lengths=ops.maximum(lengths, 1.0)[:, None],
        )
        out = self._output(residual, u, r, hx, attended[:, 0], False)

        if self.chunk_size:
            begin = (0, block, 0)
            key_window = ops.slice(
                keys, begin, (batch_size, window, ops.shape(keys)[2])
            )
            value_window = ops.slice(
                values, begin, (batch_size, window, ops.shape(values)[2])
            )
            group_window = ops.slice(
                key_groups, (0, block), (batch_size, window)
            )
        else:
            slot_pos = ops.arange(window, dtype="int32")
            index = ops.where(
                slot_pos < position, slot_pos, window + slot_pos - position
            )
            index = ops.clip(index, 0, window + block - 1)
            key_window = ops.take(keys, index, axis=1)
            value_window = ops.take(values, index, axis=1)
            fed = slot_pos < position + block
            group_window = ops.where(
                fed[None], ops.take(key_groups, index, axis=1), -1
            )
        last = ops.stack([document_ids[:, -1], positions[:, -1]], axis=1)
        return out, (ema_state, key_window, value_window, group_window, last)

    def compute_output_spec(
        self, x, return_attention_scores=False, document_ids=None, **kwargs
    ):
        output = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        batch_size, length = x.shape[0], x.shape[1]
        chunk = self.chunk_size or length
        chunks = None if self.chunk_size else 1
        keys = chunk
        if document_ids is not None and self.chunk_size:
            keys = chunk * (2 if self.causal else 3)
        weights = keras.KerasTensor(
            (batch_size, chunks, chunk, keys), "float32"
        )
        return output, weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "ema_dim": self.ema_dim,
                "bidirectional": self.bidirectional,
                "causal": self.causal,
                "truncation": self.truncation,
                "ema_delta_alpha_range": self.ema_delta_alpha_range,
                "ema_beta_range": self.ema_beta_range,
                "ema_gamma_omega_range": self.ema_gamma_omega_range,
                "ema_init": self.ema_init,
                "ema_max_timescale": self.ema_max_timescale,
            }
        )
        return config
