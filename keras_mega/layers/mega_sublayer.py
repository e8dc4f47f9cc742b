"""What Mega's residual sublayers share: norm, activation, dropout, init."""

import keras

from keras_mega.layers.flat_dense import FlatDense
from keras_mega.layers.functional import get_activation
from keras_mega.layers.layer_options import LayerOptions
from keras_mega.layers.normalization import make_normalization
from keras_mega.layers.static_remat import StaticRemat


class MegaSublayer(StaticRemat, LayerOptions, keras.layers.Layer):
    """Base of a Mega sublayer with a residual: `y = x + f(norm(x))`, or
    `norm(x + f(x))` with post-norm.

    A subclass lists its own options in `OPTIONS` (these included); this
    constructor takes them all and sets them as attributes.

    Args:
        hidden_dim: int. Model width.
        normalization_type: see `keras_mega.layers.NORMALIZATION_TYPES`.
        norm_affine: bool. Learned norm scale/shift.
        normalize_before: bool. Pre-norm (True) or post-norm.
        activation: str. HF's `activation`.
        dropout: float. Dropout of the sublayer output (HF `dropout_prob`).
        feature_dropout: bool. Drop whole channels.
        initializer_range: float. Init std of the projections.
    """

    OPTIONS = dict(
        normalization_type="scalenorm",
        norm_affine=True,
        normalize_before=True,
        activation="silu",
        dropout=0.0,
        feature_dropout=False,
        initializer_range=0.02,
    )

    def __init__(self, hidden_dim, **kwargs):
        options = self.pop_options(kwargs)
        super().__init__(**kwargs)
        self.set_options(options)
        self.hidden_dim = int(hidden_dim)
        self.norm_affine = bool(self.norm_affine)
        self.normalize_before = bool(self.normalize_before)
        self.feature_dropout = bool(self.feature_dropout)
        self.activation_fn = get_activation(self.activation)
        self.norm = make_normalization(
            self.normalization_type,
            affine=self.norm_affine,
            name="norm",
            dtype=self.dtype_policy,
        )
        self.dropout_layer = self.make_dropout(self.dropout, "dropout")

    def dense(self, units, name):
        """A projection of this sublayer, in its dtype policy."""
        return FlatDense(
            units,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_range
            ),
            name=name,
            dtype=self.dtype_policy,
        )

    def make_dropout(self, rate, name):
        """A dropout of this sublayer in its dtype policy; with
        `feature_dropout` it drops whole channels of `[B, L, C]` inputs."""
        noise_shape = (None, 1, None) if self.feature_dropout else None
        return keras.layers.Dropout(
            rate, noise_shape=noise_shape, name=name, dtype=self.dtype_policy
        )

    def pre_norm(self, x, training):
        """`(residual, input of the sublayer)`: `x` normed when pre-norm."""
        if self.normalize_before:
            return x, self.norm(x, training=training)
        return x, x

    def gated_residual(self, residual, u, h, training):
        """`residual + u * (dropout(h) - residual)`, normed when post-norm
        (the gated residual of both attention sublayers)."""
        h = self.dropout_layer(h, training=training)
        out = residual + u * (h - residual)
        if not self.normalize_before:
            out = self.norm(out, training=training)
        return out

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape
