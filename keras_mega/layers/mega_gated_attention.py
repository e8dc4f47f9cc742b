"""Mega's moving-average equipped gated attention (paper section 3.2)."""

import keras
from keras import ops

from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.mega_attention_cache import MegaAttentionCache
from keras_mega.layers.mega_attention_sublayer import MegaAttentionSublayer
from keras_mega.layers.mega_attention_sublayer import key_counts
from keras_mega.layers.mega_documents import attention_groups
from keras_mega.layers.mega_documents import check_document_ids
from keras_mega.layers.mega_documents import positions_in_documents
from keras_mega.layers.mega_ema import MegaEMA


def padding_allowed(key_mask, unmask_empty_rows):
    """`[B, n, 1, K]` from a chunked key mask `[B, n, K]`.

    With `unmask_empty_rows` (softmax), a chunk with no real key at all
    attends to all of its keys, as fairseq and HF do.
    """
    if unmask_empty_rows:
        empty = ops.logical_not(ops.any(key_mask, axis=-1, keepdims=True))
        key_mask = ops.logical_or(key_mask, empty)
    return key_mask[:, :, None, :]


def _pad_time(t, pad, fill=0):
    """`t` `[B, L, ...]` padded with `pad` positions at the end."""
    rest = [[0, 0]] * (len(t.shape) - 2)
    return ops.pad(t, [[0, 0], [0, pad]] + rest, constant_values=fill)


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaGatedAttention(MegaAttentionCache, MegaAttentionSublayer):
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
    (the padding masked) and the padding stripped again. Decoding with a
    cache: see `MegaAttentionCache`.

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

    OPTIONS = dict(
        causal=False,
        **MegaAttentionSublayer.OPTIONS,
        **MegaEMA.OPTIONS,
    )

    def __init__(self, hidden_dim, intermediate_dim, **kwargs):
        super().__init__(hidden_dim, **kwargs)
        self.intermediate_dim = int(intermediate_dim)
        self.ema_dim = int(self.ema_dim)
        self.bidirectional = bool(self.bidirectional)
        self.causal = bool(self.causal)
        self.truncation = check_positive_or_none("truncation", self.truncation)

        # === Layers ===
        self.ema_gate = MegaEMA(
            hidden_dim,
            **self.options_for(MegaEMA),
            name="ema_gate",
            dtype=self.dtype_policy,
        )
        self.v_proj = self.dense(intermediate_dim, "v_proj")
        self.mx_proj = self.dense(
            self.shared_dim + intermediate_dim + 2 * hidden_dim, "mx_proj"
        )
        self.h_proj = self.dense(hidden_dim, "h_proj")

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        for layer in (self.norm, self.ema_gate, self.v_proj, self.mx_proj):
            layer.build(shape)
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

    def _project(self, x, training):
        """Residual, normed input and values of `x` `[B, L, D]`."""
        residual, x = self.pre_norm(x, training)
        value = self.activation_fn(self.v_proj(x))
        value = self.hidden_dropout_layer(value, training=training)
        return residual, x, value

    def _gates(self, ema_output, training):
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
        return self.gated_residual(residual, u, h, training)

    def _forward(self, x, padding_mask, document_ids, training):
        """The full forward: `(output, attention weights, (normed input,
        keys, values))`, the last for `prefill`'s cache."""
        # Under remat (`MegaBackbone(remat=True)`) the projections, the
        # gates and the attention are units of their own, nested in this
        # layer's recomputation, as the EMA is: each unit's activations are
        # kept only while the backward pass goes through it (0.51x the
        # blocks-only memory per token; benchmarks/remat_memory.py).
        unit = self.rematerialized_part
        residual, normed, value = unit(self._project)(x, training=training)
        ema_output = self.ema_gate(
            normed, padding_mask=padding_mask, document_ids=document_ids
        )
        u, r, hx, query, key = unit(self._gates)(ema_output, training=training)
        if document_ids is None:
            attention = self._chunked_attention
        else:
            check_document_ids(document_ids, query[..., 0])
            attention = self._packed_attention
        attended, weights = unit(attention)(
            query,
            key,
            value,
            padding_mask=padding_mask,
            document_ids=document_ids,
            training=training,
        )
        out = self._output(residual, u, r, hx, attended, training)
        return out, weights, (normed, key, value)

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
        out, weights, _ = self._forward(x, padding_mask, document_ids, training)
        if return_attention_scores:
            return out, weights
        return out

    def _key_mask(self, query, padding_mask):
        if padding_mask is None:
            return ops.ones(ops.shape(query)[:2], "float32")
        return ops.cast(padding_mask, "float32")

    def _chunked_attention(
        self, query, key, value, padding_mask, document_ids, training
    ):
        """Attention over `[B, L, ...]` inputs, in chunks of `chunk_size`."""
        batch_size, length = ops.shape(query)[0], ops.shape(query)[1]
        chunk = self.chunk_size or length
        if isinstance(chunk, int):
            self.rel_pos_bias.check_length(chunk)
        pad = (-length) % chunk if self.chunk_size else 0
        tensors = query, key, value, self._key_mask(query, padding_mask)
        if not (isinstance(pad, int) and pad == 0):
            tensors = [_pad_time(t, pad) for t in tensors]
        query, key, value, key_mask = [
            ops.reshape(t, (batch_size, -1, chunk) + tuple(ops.shape(t)[2:]))
            for t in tensors
        ]
        key_mask = ops.cast(key_mask, "bool")
        positions = ops.arange(chunk)
        allowed = padding_allowed(
            key_mask, self.attention_activation == "softmax"
        )
        if self.causal:
            causal = positions[None, :] <= positions[:, None]
            allowed = ops.logical_and(allowed, causal)
            # Element attention divides by the keys a query sees: causal,
            # its position + 1; else the chunk's real keys (HF, fairseq).
            lengths = ops.cast(positions + 1, "float32")[:, None]
        else:
            lengths = key_counts(key_mask)
        attended, weights = self.attend(
            query, key, value, allowed, positions, positions, lengths, training
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
        key_mask = self._key_mask(query, padding_mask)
        groups = attention_groups(
            positions_in_documents(document_ids), self.chunk_size
        )
        if self.chunk_size:
            chunk = self.chunk_size
            self.rel_pos_bias.check_length(chunk)
            pad = (-length) % chunk
            tensors = [query, key, value, key_mask]
            tensors = [_pad_time(t, pad) for t in tensors]
            tensors.append(_pad_time(groups, pad, fill=-1))
            query, key, value, key_mask, groups = [
                ops.reshape(
                    t, (batch_size, -1, chunk) + tuple(ops.shape(t)[2:])
                )
                for t in tensors
            ]
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
        # The keys the query would see alone: causal, its position in the
        # chunk + 1; else the chunk's real keys.
        counted = same if self.causal else allowed
        lengths = ops.sum(ops.cast(counted, "float32"), -1, keepdims=True)
        lengths = ops.maximum(lengths, 1.0)
        positions = (query_positions, key_positions)
        attended, weights = self.attend(
            query, key, value, allowed, *positions, lengths, training
        )
        attended = ops.reshape(
            attended, (batch_size, -1, self.intermediate_dim)
        )
        return attended[:, :length], weights

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
