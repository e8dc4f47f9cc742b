"""Mega's moving-average equipped gated attention (paper section 3.2)."""

import keras
from keras import ops

from keras_mega.layers.functional import ATTENTION_ACTIVATIONS
from keras_mega.layers.functional import RELATIVE_POSITION_BIASES
from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.functional import element_attention_function
from keras_mega.layers.functional import get_activation
from keras_mega.layers.mega_ema import MegaEMA
from keras_mega.layers.normalization import make_normalization
from keras_mega.layers.relative_position_bias import (
    make_relative_position_bias,
)

# Finite stand-in for -inf: exp() of it is exactly 0 in float32, and a row
# with no allowed key stays finite instead of turning into NaN.
MASK_VALUE = -1e9


def make_dropout(rate, featurewise, name):
    """Dropout; `featurewise` drops whole channels of `[B, L, C]` inputs."""
    noise_shape = (None, 1, None) if featurewise else None
    return keras.layers.Dropout(rate, noise_shape=noise_shape, name=name)


def dense(units, initializer_range, name):
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.RandomNormal(
            stddev=initializer_range
        ),
        name=name,
    )


def attention_weights(
    scores,
    key_mask,
    attention_activation,
    causal,
    query_positions=None,
    key_positions=None,
    unmask_empty_rows=True,
):
    """Turns float32 scores `[..., Q, K]` into attention weights.

    Args:
        scores: `[B, n, Q, K]`, scaled `q k^T` plus the relative bias; for
            element attentions, `q k^T` plus bias after dividing by the
            length (done here).
        key_mask: `[B, n, K]` bool, True for real keys.
        attention_activation: "softmax", "laplace" or "relu2".
        causal: bool. Query at position `i` sees keys at `j <= i`.
        query_positions, key_positions: int positions `[Q]`, `[K]` used for
            the causal mask (default `arange`).
        unmask_empty_rows: softmax only: when a chunk has no real key at
            all, attend to all of its keys (as fairseq and HF do).
    """
    q_len, k_len = ops.shape(scores)[-2], ops.shape(scores)[-1]
    if query_positions is None:
        query_positions = ops.arange(q_len)
    if key_positions is None:
        key_positions = ops.arange(k_len)
    causal_mask = None
    if causal:
        causal_mask = key_positions[None, :] <= query_positions[:, None]

    if attention_activation == "softmax":
        allowed = key_mask
        if unmask_empty_rows:
            empty = ops.logical_not(ops.any(key_mask, axis=-1, keepdims=True))
            allowed = ops.logical_or(allowed, empty)
        allowed = allowed[:, :, None, :]
        if causal_mask is not None:
            allowed = ops.logical_and(allowed, causal_mask)
        scores = ops.where(allowed, scores, MASK_VALUE)
        return ops.softmax(scores, axis=-1)

    # Element attention: the scores were divided by the number of keys a
    # query sees (causal: its position + 1; else the chunk's real keys).
    weights = element_attention_function(attention_activation)(scores)
    weights = weights * ops.cast(key_mask, "float32")[:, :, None, :]
    if causal_mask is not None:
        weights = weights * ops.cast(causal_mask, "float32")
    return weights


def element_lengths(key_mask, causal, query_positions):
    """The divisor of element attention, broadcastable to `[B, n, Q, K]`."""
    if causal:
        return ops.cast(query_positions + 1, "float32")[:, None]
    lengths = ops.sum(ops.cast(key_mask, "float32"), axis=-1)
    return ops.maximum(lengths, 1.0)[:, :, None, None]


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaGatedAttention(keras.layers.Layer):
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
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.shared_dim = int(shared_dim)
        self.ema_dim = int(ema_dim)
        self.bidirectional = bool(bidirectional)
        self.causal = bool(causal)
        self.chunk_size = check_positive_or_none("chunk_size", chunk_size)
        self.truncation = check_positive_or_none("truncation", truncation)
        self.attention_activation = check_choice(
            "attention_activation", attention_activation, ATTENTION_ACTIVATIONS
        )
        self.relative_position_bias = check_choice(
            "relative_position_bias",
            relative_position_bias,
            RELATIVE_POSITION_BIASES,
        )
        self.max_sequence_length = int(max_sequence_length)
        self.normalization_type = normalization_type
        self.norm_affine = bool(norm_affine)
        self.normalize_before = bool(normalize_before)
        self.activation = activation
        self.activation_fn = get_activation(activation)
        self.dropout = dropout
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.feature_dropout = bool(feature_dropout)
        self.initializer_range = initializer_range
        self.ema_delta_alpha_range = ema_delta_alpha_range
        self.ema_beta_range = ema_beta_range
        self.ema_gamma_omega_range = ema_gamma_omega_range
        self.ema_init = ema_init
        self.ema_max_timescale = ema_max_timescale

        # === Layers ===
        self.norm = make_normalization(
            normalization_type, affine=norm_affine, name="norm"
        )
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
        )
        self.v_proj = dense(intermediate_dim, initializer_range, "v_proj")
        self.mx_proj = dense(
            shared_dim + intermediate_dim + 2 * hidden_dim,
            initializer_range,
            "mx_proj",
        )
        self.h_proj = dense(hidden_dim, initializer_range, "h_proj")
        self.rel_pos_bias = make_relative_position_bias(
            relative_position_bias,
            max_sequence_length,
            self.chunk_size,
            shared_dim,
            initializer_range,
            name="rel_pos_bias",
        )
        self.dropout_layer = make_dropout(dropout, feature_dropout, "dropout")
        self.hidden_dropout_layer = make_dropout(
            hidden_dropout, feature_dropout, "hidden_dropout"
        )
        self.attention_dropout_layer = keras.layers.Dropout(
            attention_dropout, name="attention_dropout"
        )

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
        query = shared * self.qk_weight[0] + self.qk_bias[0]
        key = shared * self.qk_weight[1] + self.qk_bias[1]
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
        key_mask,
        query_offset=0,
        key_offset=0,
        training=None,
    ):
        """Single-head attention of chunked queries over chunked keys.

        Args:
            query: `[B, n, Q, Z]`. key: `[B, n, K, Z]`. value: `[B, n, K, H]`.
            key_mask: `[B, n, K]` bool, True for real keys.
            query_offset, key_offset: position of the first query / key
                inside its chunk (for decoding with a cache).

        Returns:
            `(output [B, n, Q, H], weights [B, n, Q, K] float32)`.
        """
        q_len, k_len = ops.shape(query)[2], ops.shape(key)[2]
        query_positions = ops.arange(q_len) + query_offset
        key_positions = ops.arange(k_len) + key_offset
        query = ops.cast(query, "float32")
        key = ops.cast(key, "float32")
        bias = self.rel_pos_bias.compute_bias(q_len, k_len, query_offset - key_offset)
        bias = ops.cast(bias, "float32")
        if self.attention_activation == "softmax":
            query = query * self.shared_dim**-0.5
        scores = ops.einsum("bnqz,bnkz->bnqk", query, key)
        if self.attention_activation != "softmax":
            scores = scores / element_lengths(
                key_mask, self.causal, query_positions
            )
        scores = scores + bias
        weights = attention_weights(
            scores,
            key_mask,
            self.attention_activation,
            self.causal,
            query_positions,
            key_positions,
        )
        dropped = self.attention_dropout_layer(weights, training=training)
        dropped = ops.cast(dropped, value.dtype)
        return ops.einsum("bnqk,bnkh->bnqh", dropped, value), weights

    def call(
        self,
        x,
        padding_mask=None,
        training=None,
        return_attention_scores=False,
    ):
        """`x`: `[B, L, hidden_dim]`; `padding_mask`: `[B, L]`, 1 = keep.

        Returns `[B, L, hidden_dim]`, and with `return_attention_scores` also
        the attention weights `[B, chunks, chunk, chunk]` (one chunk of `L`
        when chunking is off; padding added for chunking included).
        """
        residual = x
        if self.normalize_before:
            x = self.norm(x, training=training)
        value = self.activation_fn(self.v_proj(x))
        value = self.hidden_dropout_layer(value, training=training)
        ema_output = self.ema_gate(x, padding_mask=padding_mask)
        u, r, hx, query, key = self._gates(x, ema_output, training)

        batch_size, length = ops.shape(x)[0], ops.shape(x)[1]
        if padding_mask is None:
            key_mask = ops.ones((batch_size, length), "float32")
        else:
            key_mask = ops.cast(padding_mask, "float32")
        chunk = self.chunk_size or length
        pad = (-length) % chunk if self.chunk_size else 0
        if isinstance(pad, int) and pad == 0:
            padded = query, key, value, key_mask
        else:
            padded = [
                ops.pad(t, [[0, 0], [0, pad]] + [[0, 0]] * (len(t.shape) - 2))
                for t in (query, key, value, key_mask)
            ]

        def chunked(t):
            return ops.reshape(
                t, (batch_size, -1, chunk) + tuple(ops.shape(t)[2:])
            )

        query, key, value, key_mask = [chunked(t) for t in padded]
        key_mask = ops.cast(key_mask, "bool")
        attended, weights = self.attend(
            query, key, value, key_mask, training=training
        )
        attended = ops.reshape(attended, (batch_size, -1, self.intermediate_dim))
        attended = attended[:, :length]
        out = self._output(residual, u, r, hx, attended, training)
        if return_attention_scores:
            return out, weights
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "shared_dim": self.shared_dim,
                "ema_dim": self.ema_dim,
                "bidirectional": self.bidirectional,
                "causal": self.causal,
                "chunk_size": self.chunk_size,
                "truncation": self.truncation,
                "attention_activation": self.attention_activation,
                "relative_position_bias": self.relative_position_bias,
                "max_sequence_length": self.max_sequence_length,
                "normalization_type": self.normalization_type,
                "norm_affine": self.norm_affine,
                "normalize_before": self.normalize_before,
                "activation": self.activation,
                "dropout": self.dropout,
                "hidden_dropout": self.hidden_dropout,
                "attention_dropout": self.attention_dropout,
                "feature_dropout": self.feature_dropout,
                "initializer_range": self.initializer_range,
                "ema_delta_alpha_range": self.ema_delta_alpha_range,
                "ema_beta_range": self.ema_beta_range,
                "ema_gamma_omega_range": self.ema_gamma_omega_range,
                "ema_init": self.ema_init,
                "ema_max_timescale": self.ema_max_timescale,
            }
        )
        return config
