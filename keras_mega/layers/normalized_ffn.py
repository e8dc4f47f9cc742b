"""Mega's normalized feed-forward network."""

import keras

from keras_mega.layers.mega_sublayer import MegaSublayer


@keras.saving.register_keras_serializable(package="keras_mega")
class NormalizedFFN(MegaSublayer):
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

    OPTIONS = dict(activation_dropout=0.0, **MegaSublayer.OPTIONS)

    def __init__(self, hidden_dim, intermediate_dim, **kwargs):
        super().__init__(hidden_dim, **kwargs)
        self.intermediate_dim = int(intermediate_dim)
        self.fc1 = self.dense(intermediate_dim, "fc1")
        self.fc2 = self.dense(hidden_dim, "fc2")
        self.activation_dropout_layer = self.make_dropout(
            self.activation_dropout, "activation_dropout"
        )

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        self.norm.build(shape)
        self.fc1.build(shape)
        self.fc2.build((None, None, self.intermediate_dim))
        self.built = True

    def call(self, x, training=None):
        residual, x = self.pre_norm(x, training)
        hidden = self.activation_fn(self.fc1(x))
        hidden = self.activation_dropout_layer(hidden, training=training)
        out = self.dropout_layer(self.fc2(hidden), training=training)
        out = out + residual
        if not self.normalize_before:
            out = self.norm(out, training=training)
        return out
