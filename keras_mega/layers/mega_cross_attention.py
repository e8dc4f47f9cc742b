"""Mega's gated cross attention, for decoders attending to an encoder."""

import keras
from keras import ops

from keras_mega.layers.mega_gated_attention import attention_weights
from keras_mega.layers.mega_sublayer import MegaAttentionSublayer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCrossAttention(MegaAttentionSublayer):
    """Gated cross attention of HF's `MegaGatedCrossAttention`.

        x' = norm(x) (pre-norm) ;  u, g, q = sigmoid, silu, id of W_q x'
        k = W_k e ;  v = act(W_v e)            (e: encoder output)
        h = act(W_h((attention(q, k) @ v) * g))
        y = x + u * (h - x)  (then norm(y) for post-norm)

    Attention is never causal and never chunked. The relative bias follows
    HF: `bias(max(Lq, Lk))[:Lq, :Lk]`, so with a simple bias both lengths
    must fit its range. Unlike HF, a row whose encoder keys are all padding
    gives zero attention instead of NaN.

    Args:
        hidden_dim: int. Model width (decoder and encoder).
        shared_dim: int. Query/key width `Z`.
        chunk_size: int or None. Only sizes the simple bias as in HF.
        Other args: see `MegaAttentionSublayer` and `MegaSublayer`
            (normalization, activation, dropouts, initialization).

    Example:
    >>> layer = MegaCrossAttention(hidden_dim=16, shared_dim=8)
    >>> x, e = keras.random.normal((2, 5, 16)), keras.random.normal((2, 7, 16))
    >>> layer(x, e).shape
    (2, 5, 16)
    """

    def __init__(self, hidden_dim, shared_dim=64, **kwargs):
        super().__init__(hidden_dim, shared_dim=shared_dim, **kwargs)
        self.q_proj = self.dense(2 * hidden_dim + shared_dim, "q_proj")
        self.k_proj = self.dense(shared_dim, "k_proj")
        self.v_proj = self.dense(hidden_dim, "v_proj")
        self.h_proj = self.dense(hidden_dim, "h_proj")

    def build(self, x_shape, encoder_sequence_output_shape=None):
        shape = (None, None, self.hidden_dim)
        for layer in (self.norm, self.q_proj, self.k_proj, self.v_proj):
            layer.build(shape)
        self.h_proj.build(shape)
        self.rel_pos_bias.build()
        self.built = True

    def call(
        self,
        x,
        encoder_sequence_output,
        encoder_padding_mask=None,
        query_offset=0,
        training=None,
        return_attention_scores=False,
    ):
        """`x`: `[B, Lq, D]`; `encoder_sequence_output`: `[B, Lk, D]`;
        `encoder_padding_mask`: `[B, Lk]`, 1 = keep; `query_offset`: position
        of `x[:, 0]` in the decoded sequence (decoding with a cache)."""
        residual = x
        if self.normalize_before:
            x = self.norm(x, training=training)
        d = self.hidden_dim
        u, gate, query = ops.split(self.q_proj(x), [d, 2 * d], axis=-1)
        u = ops.sigmoid(u)
        gate = ops.silu(gate)
        key = self.k_proj(encoder_sequence_output)
        value = self.activation_fn(self.v_proj(encoder_sequence_output))

        q_len = ops.shape(query)[1]
        k_len = ops.shape(key)[1]
        if encoder_padding_mask is None:
            key_mask = ops.ones(ops.shape(key)[:2], "bool")
        else:
            key_mask = ops.cast(encoder_padding_mask, "bool")
        query = ops.cast(query, "float32")[:, None]
        key = ops.cast(key, "float32")[:, None]
        key_mask = key_mask[:, None]
        static = isinstance(q_len, int) and isinstance(k_len, int)
        if static and isinstance(query_offset, int):
            # HF: bias(max(Lq, Lk))[:Lq, :Lk]; the simple bias checks range.
            self.rel_pos_bias.check_length(max(q_len + query_offset, k_len))
        if self.attention_activation == "softmax":
            query = query * self.shared_dim**-0.5
        else:
            lengths = ops.sum(ops.cast(key_mask, "float32"), axis=-1)
            query = query / ops.maximum(lengths, 1.0)[:, :, None, None]
        scores = self.rel_pos_bias.biased_scores(
            query, key, ops.arange(q_len) + query_offset, ops.arange(k_len)
        )
        weights = attention_weights(
            scores, key_mask[:, :, None, :], self.attention_activation
        )
        if self.attention_activation == "softmax":
            # No real key at all: zero attention rather than NaN (HF).
            has_key = ops.any(key_mask, axis=-1)[:, :, None, None]
            weights = ops.where(has_key, weights, 0.0)
        value = self.hidden_dropout_layer(value, training=training)
        dropped = self.attention_dropout_layer(weights, training=training)
        attended = ops.einsum(
            "bqk,bkh->bqh", ops.cast(dropped[:, 0], value.dtype), value
        )
        h = self.activation_fn(self.h_proj(attended * gate))
        h = self.dropout_layer(h, training=training)
        out = residual + u * (h - residual)
        if not self.normalize_before:
            out = self.norm(out, training=training)
        if return_attention_scores:
            return out, weights[:, 0]
        return out

    def compute_output_spec(
        self,
        x,
        encoder_sequence_output,
        return_attention_scores=False,
        **kwargs,
    ):
        output = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        shape = (x.shape[0], x.shape[1], encoder_sequence_output.shape[1])
        return output, keras.KerasTensor(shape, "float32")
