"""Mega's normalized feed-forward network."""

import keras

from keras_mega.layers.functional import get_activation
from keras_mega.layers.mega_gated_attention import dense
from keras_mega.layers.mega_gated_attention import make_dropout
from keras_mega.layers.normalization import make_normalization


@keras.saving.register_keras_serializable(package="keras_mega")
class NormalizedFFN(keras.layers.Layer):
    """Feed-forward block with its own norm (HF
    `MegaNormalizedFeedForwardNetwork`):

        y = x + dropout(fc2(activation_dropout(act(fc1(norm(x))))))

    with the norm after the residual instead when `normalize_before=False`.

    Args:
        hidden_dim: int. Model width.
        intermediate_dim: int. Hidden width (HF `nffn_hidden_size`).
        normalization_type, norm_affine: the norm, as in `MegaGatedAttention`.
        normalize_before: bool. Pre-norm (HF `normalize_before_ffn`).
        activation: str. HF `activation`.
        dropout: float. Output dropout (HF `dropout_prob`).
        activation_dropout: float. HF `nffn_activation_dropout_prob`.
        feature_dropout: bool. Drop whole channels.
        initializer_range: float. Init std of the projections.

    Example:
    >>> NormalizedFFN(16, 32)(keras.random.normal((2, 5, 16))).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        normalization_type="scalenorm",
        norm_affine=True,
        normalize_before=True,
        activation="silu",
        dropout=0.0,
        activation_dropout=0.0,
        feature_dropout=False,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.normalization_type = normalization_type
        self.norm_affine = bool(norm_affine)
        self.normalize_before = bool(normalize_before)
        self.activation = activation
        self.activation_fn = get_activation(activation)
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.feature_dropout = bool(feature_dropout)
        self.initializer_range = initializer_range

        # === Layers ===
        self.norm = make_normalization(
            normalization_type, affine=norm_affine, name="norm"
        )
        self.fc1 = dense(intermediate_dim, initializer_range, "fc1")
        self.fc2 = dense(hidden_dim, initializer_range, "fc2")
        self.dropout_layer = make_dropout(dropout, feature_dropout, "dropout")
        self.activation_dropout_layer = make_dropout(
            activation_dropout, feature_dropout, "activation_dropout"
        )

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        self.norm.build(shape)
        self.fc1.build(shape)
        self.fc2.build((None, None, self.intermediate_dim))
        self.built = True

    def call(self, x, training=None):
        residual = x
        if self.normalize_before:
            x = self.norm(x, training=training)
        hidden = self.activation_fn(self.fc1(x))
        hidden = self.activation_dropout_layer(hidden, training=training)
        out = self.dropout_layer(self.fc2(hidden), training=training)
        out = out + residual
        if not self.normalize_before:
            out = self.norm(out, training=training)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "normalization_type": self.normalization_type,
                "norm_affine": self.norm_affine,
                "normalize_before": self.normalize_before,
                "activation": self.activation,
                "dropout": self.dropout,
                "activation_dropout": self.activation_dropout,
                "feature_dropout": self.feature_dropout,
                "initializer_range": self.initializer_range,
            }
        )
        return config
