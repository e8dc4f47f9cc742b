"""What Mega's attention sublayers share: options, bias, `attend`."""

import keras
from keras import ops

from keras_mega.layers.functional import ATTENTION_ACTIVATIONS
from keras_mega.layers.functional import RELATIVE_POSITION_BIASES
from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.functional import element_attention_function
from keras_mega.layers.mega_sublayer import MegaSublayer
from keras_mega.layers.relative_position_bias import make_relative_position_bias

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


def key_counts(key_mask):
    """float32 `[B, n, 1, 1]`: real keys per chunk of a `[B, n, K]` mask
    (at least 1), the divisor of non-causal element attention."""
    counts = ops.sum(ops.cast(key_mask, "float32"), axis=-1)
    return ops.maximum(counts, 1.0)[:, :, None, None]


class MegaAttentionSublayer(MegaSublayer):
    """Base of Mega's attention sublayers (gated and cross attention).

    Args:
        shared_dim: int. Width of queries and keys `Z`.
        chunk_size: int or None. Attention chunk size (sizes the simple bias).
        attention_activation: "softmax", "laplace" or "relu2".
        relative_position_bias: "rotary" or "simple".
        max_sequence_length: int. Sizes the simple bias (HF `max_positions`).
        hidden_dropout: float. Dropout of the values.
        attention_dropout: float. Dropout of the attention weights.
        Other args: see `MegaSublayer`.
    """

    OPTIONS = dict(
        shared_dim=64,
        chunk_size=None,
        attention_activation="softmax",
        relative_position_bias="rotary",
        max_sequence_length=2048,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **MegaSublayer.OPTIONS,
    )

    def __init__(self, hidden_dim, **kwargs):
        super().__init__(hidden_dim, **kwargs)
        self.shared_dim = int(self.shared_dim)
        self.chunk_size = check_positive_or_none("chunk_size", self.chunk_size)
        check_choice(
            "attention_activation",
            self.attention_activation,
            ATTENTION_ACTIVATIONS,
        )
        check_choice(
            "relative_position_bias",
            self.relative_position_bias,
            RELATIVE_POSITION_BIASES,
        )
        self.max_sequence_length = int(self.max_sequence_length)
        self.rel_pos_bias = make_relative_position_bias(
            self.relative_position_bias,
            self.max_sequence_length,
            self.chunk_size,
            self.shared_dim,
            self.initializer_range,
            name="rel_pos_bias",
            dtype=self.dtype_policy,
        )
        self.hidden_dropout_layer = self.make_dropout(
            self.hidden_dropout, "hidden_dropout"
        )
        self.attention_dropout_layer = keras.layers.Dropout(
            self.attention_dropout,
            name="attention_dropout",
            dtype=self.dtype_policy,
        )

    def attend(
        self,
        query,
        key,
        value,
        allowed,
        query_positions,
        key_positions,
        lengths,
        training=None,
        zero_empty_rows=False,
    ):
        """Single-head attention, chunk by chunk, in float32.

        Args:
            query: `[B, n, Q, Z]`. key: `[B, n, K, Z]`. value: `[B, n, K, H]`.
            allowed: bool broadcastable to `[B, n, Q, K]`.
            query_positions, key_positions: `[Q]`, `[K]` int positions inside
                the chunk (whole sequence when unchunked), for the relative
                bias (the rotary bias is folded into the `q k^T` matmul).
            lengths: float32 broadcastable to `[B, n, Q, 1]`: the divisor of
                element attention, the number of keys a query sees (unused
                by softmax, which scales by `Z ** -0.5`).
            zero_empty_rows: bool. A query with no allowed key gets zero
                weights (instead of softmax's uniform ones).

        Returns:
            `(output [B, n, Q, H], weights [B, n, Q, K] float32)`.
        """
        query = ops.cast(query, "float32")
        key = ops.cast(key, "float32")
        if self.attention_activation == "softmax":
            query = query * self.shared_dim**-0.5
        else:
            query = query / lengths
        # Batch and chunks as one batch axis: XLA's CPU backend runs the
        # backward of a matmul with two batch axes (and of the softmax
        # between them) 1.6x slower (measured at L=1024, full attention).
        batch_size, chunks = ops.shape(query)[0], ops.shape(query)[1]
        allowed = ops.broadcast_to(
            allowed,
            (batch_size, chunks)
            + tuple(ops.shape(allowed)[-2:-1])
            + tuple(ops.shape(key)[2:3]),
        )
        query, key, value, allowed = [
            ops.reshape(t, (-1,) + tuple(ops.shape(t)[2:]))
            for t in (query, key, value, allowed)
        ]
        scores = self.rel_pos_bias.biased_scores(
            query, key, query_positions, key_positions
        )
        weights = attention_weights(scores, allowed, self.attention_activation)
        if zero_empty_rows:
            has_key = ops.any(allowed, axis=-1, keepdims=True)
            weights = ops.where(has_key, weights, 0.0)
        dropped = self.attention_dropout_layer(weights, training=training)
        dropped = ops.cast(dropped, value.dtype)
        output = ops.einsum("bqk,bkh->bqh", dropped, value)
        unflat = (batch_size, chunks)
        return (
            ops.reshape(output, unflat + tuple(ops.shape(output)[1:])),
            ops.reshape(weights, unflat + tuple(ops.shape(weights)[1:])),
        )
