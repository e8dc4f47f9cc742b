"""Mega's gated cross attention, for decoders attending to an encoder."""

import keras
from keras import ops

from keras_mega.layers.mega_attention_sublayer import MegaAttentionSublayer
from keras_mega.layers.mega_attention_sublayer import key_counts


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

    def __init__(self, hidden_dim, **kwargs):
        super().__init__(hidden_dim, **kwargs)
        self.q_proj = self.dense(2 * hidden_dim + self.shared_dim, "q_proj")
        self.k_proj = self.dense(self.shared_dim, "k_proj")
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
        residual, x = self.pre_norm(x, training)
        d = self.hidden_dim
        u, gate, query = ops.split(self.q_proj(x), [d, 2 * d], axis=-1)
        key = self.k_proj(encoder_sequence_output)
        value = self.activation_fn(self.v_proj(encoder_sequence_output))
        value = self.hidden_dropout_layer(value, training=training)
        q_len, k_len = ops.shape(query)[1], ops.shape(key)[1]
        if encoder_padding_mask is None:
            key_mask = ops.ones(ops.shape(key)[:2], "bool")
        else:
            key_mask = ops.cast(encoder_padding_mask, "bool")
        key_mask = key_mask[:, None]
        static = isinstance(q_len, int) and isinstance(k_len, int)
        if static and isinstance(query_offset, int):
            # HF: bias(max(Lq, Lk))[:Lq, :Lk]; the simple bias checks range.
            self.rel_pos_bias.check_length(max(q_len + query_offset, k_len))
        # A row with no real key at all: zero attention rather than NaN (HF).
        attended, weights = self.attend(
            query[:, None],
            key[:, None],
            value[:, None],
            key_mask[:, :, None, :],
            ops.arange(q_len) + query_offset,
            ops.arange(k_len),
            key_counts(key_mask),
            training,
            zero_empty_rows=True,
        )
        h = self.activation_fn(self.h_proj(attended[:, 0] * ops.silu(gate)))
        out = self.gated_residual(residual, ops.sigmoid(u), h, training)
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
