"""Mega's relative position biases, added to the attention scores."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mega")
class SimpleRelativePositionBias(keras.layers.Layer):
    """A learned scalar per relative offset: `bias[i, j] = w[M - 1 + j - i]`.

    `M` is the longest sequence (or attention chunk) the bias serves. The
    weight has `2 * max_sequence_length - 1` entries as in HF, which indexes
    them with `M = chunk_size` when attention is chunked: only the first
    `2M - 1` are used then. Longer inputs raise an error.

    Args:
        max_sequence_length: int. Sizes the weight (`2 * n - 1` entries).
        max_offset: int. `M` above: the chunk size when attention is
            chunked, else `max_sequence_length`. Defaults to the latter.
        initializer_range: float. Standard deviation of the initializer.

    Example:
    >>> bias = SimpleRelativePositionBias(max_sequence_length=16)
    >>> bias.compute_bias(4, 4).shape
    (4, 4)
    """

    def __init__(
        self,
        max_sequence_length,
        max_offset=None,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_sequence_length = int(max_sequence_length)
        self.max_offset = int(max_offset or max_sequence_length)
        self.initializer_range = initializer_range
        if self.max_offset > self.max_sequence_length:
            raise ValueError(
                "The simple relative position bias serves at most "
                f"max_sequence_length={self.max_sequence_length} positions; "
                f"received a chunk of {self.max_offset}."
            )

    def build(self, input_shape=None):
        self.rel_pos_bias = self.add_weight(
            name="rel_pos_bias",
            shape=(2 * self.max_sequence_length - 1,),
            initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_range
            ),
        )
        self.built = True

    def check_length(self, length):
        """Raises a clear error for sequences the bias cannot serve."""
        if length > self.max_offset:
            raise ValueError(
                f"Sequence length {length} is longer than the simple "
                f"relative position bias supports ({self.max_offset}). "
                "Raise `max_sequence_length` (or use chunked attention with "
                "a smaller `chunk_size`), or use "
                "relative_position_bias='rotary', which has no limit."
            )

    def compute_bias(self, query_length, key_length, query_offset=0):
        """Returns the `[query_length, key_length]` bias.

        Query `i` sits at position `i + query_offset`, key `j` at `j`.
        """
        if not self.built:
            self.build()
        if isinstance(query_length, int) and isinstance(key_length, int):
            self.check_length(max(query_length, key_length))
        return self.bias_at(
            ops.arange(query_length) + query_offset, ops.arange(key_length)
        )

    def bias_at(self, query_positions, key_positions):
        """The bias `[Q, K]` between arbitrary positions `[Q]` and `[K]`.

        Offsets beyond the range are clipped (callers mask those pairs).
        """
        if not self.built:
            self.build()
        offset = key_positions[None, :] - query_positions[:, None]
        index = ops.clip(
            self.max_offset - 1 + offset, 0, 2 * self.max_sequence_length - 2
        )
        return ops.take(self.rel_pos_bias, index)

    def biased_scores(self, query, key, query_positions, key_positions):
        """`query @ key^T` plus the bias: float32 `[..., Q, K]` from
        `[..., Q, Z]` and `[..., K, Z]`."""
        scores = ops.einsum("...qz,...kz->...qk", query, key)
        bias = self.bias_at(query_positions, key_positions)
        return scores + ops.cast(bias, scores.dtype)

    def call(self, query_length, key_length, query_offset=0):
        return self.compute_bias(query_length, key_length, query_offset)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_sequence_length": self.max_sequence_length,
                "max_offset": self.max_offset,
                "initializer_range": self.initializer_range,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mega")
class RotaryRelativePositionBias(keras.layers.Layer):
    """Mega's rotary bias: `bias[m, n] = <rot_m(alpha), rot_n(beta)>`.

    Not RoPE on queries and keys: two learned vectors `alpha`, `beta` of size
    `dim` are rotated by sinusoids of their positions (base 10000, halves
    rotated against each other) and their dot product is the bias. It
    extrapolates to any length.

    Args:
        dim: int. The shared representation size `Z`.
        initializer_range: float. Standard deviation of the initializer.

    Example:
    >>> bias = RotaryRelativePositionBias(dim=8)
    >>> bias.compute_bias(4, 4).shape
    (4, 4)
    """

    def __init__(self, dim, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        if dim % 2:
            raise ValueError(
                f"The rotary relative bias needs an even dimension; got {dim}."
            )
        self.dim = int(dim)
        self.initializer_range = initializer_range

    def build(self, input_shape=None):
        # A new initializer per weight: one instance would give alpha and
        # b_param the same values (HF draws them apart).
        def init():
            return keras.initializers.RandomNormal(
                stddev=self.initializer_range
            )

        self.alpha = self.add_weight(
            name="alpha", shape=(1, self.dim), initializer=init()
        )
        self.b_param = self.add_weight(
            name="b_param", shape=(1, self.dim), initializer=init()
        )
        self.built = True

    def _rotate(self, vector, positions):
        half = self.dim // 2
        freq = ops.exp(
            ops.arange(half, dtype="float32") * (-math.log(10000.0) / half)
        )
        angle = ops.cast(positions, "float32")[:, None] * freq[None, :]
        sin, cos = ops.sin(angle), ops.cos(angle)
        vector = ops.cast(vector, "float32")
        a, b = vector[:, :half], vector[:, half:]
        return ops.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    def check_length(self, length):
        """Any length works."""
        # A body beyond the docstring: TensorFlow's AutoGraph cannot
        # transform an empty function and warns on every traced call.
        return None

    def compute_bias(self, query_length, key_length, query_offset=0):
        """Returns the `[query_length, key_length]` bias (float32)."""
        if not self.built:
            self.build()
        return self.bias_at(
            ops.arange(query_length) + query_offset, ops.arange(key_length)
        )

    def bias_at(self, query_positions, key_positions):
        """The bias `[Q, K]` between arbitrary positions `[Q]` and `[K]`."""
        rows, cols = self.factors(query_positions, key_positions)
        return ops.matmul(rows, ops.transpose(cols))

    def factors(self, query_positions, key_positions):
        """`(rows [Q, dim], cols [K, dim])` with `bias = rows @ cols^T`."""
        if not self.built:
            self.build()
        rows = self._rotate(self.alpha, query_positions)
        cols = self._rotate(self.b_param, key_positions)
        return rows, cols

    def biased_scores(self, query, key, query_positions, key_positions):
        """`query @ key^T` plus the bias: float32 `[..., Q, K]` from
        `[..., Q, Z]` and `[..., K, Z]`.

        The bias has rank `dim`, so it rides in the same matmul: queries
        and keys are extended by the rotated `alpha` and `beta`. No `[Q, K]`
        bias is materialized (nor its gradient).
        """
        rows, cols = self.factors(query_positions, key_positions)
        batch = tuple(ops.shape(query)[:-2])
        rows = ops.broadcast_to(rows, batch + tuple(ops.shape(rows)))
        cols = ops.broadcast_to(cols, batch + tuple(ops.shape(cols)))
        query = ops.concatenate([query, ops.cast(rows, query.dtype)], axis=-1)
        key = ops.concatenate([key, ops.cast(cols, key.dtype)], axis=-1)
        return ops.einsum("...qz,...kz->...qk", query, key)

    def call(self, query_length, key_length, query_offset=0):
        return self.compute_bias(query_length, key_length, query_offset)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"dim": self.dim, "initializer_range": self.initializer_range}
        )
        return config


def make_relative_position_bias(
    kind,
    max_sequence_length,
    chunk_size,
    dim,
    initializer_range,
    name=None,
    dtype=None,
):
    if kind == "simple":
        return SimpleRelativePositionBias(
            max_sequence_length,
            max_offset=chunk_size or max_sequence_length,
            initializer_range=initializer_range,
            name=name,
            dtype=dtype,
        )
    return RotaryRelativePositionBias(
        dim, initializer_range=initializer_range, name=name, dtype=dtype
    )
