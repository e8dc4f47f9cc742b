"""What Mega's residual sublayers share: norm, activation, dropout, init."""

import keras

from keras_mega.layers.functional import ATTENTION_ACTIVATIONS
from keras_mega.layers.functional import RELATIVE_POSITION_BIASES
from keras_mega.layers.functional import apply_flat
from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.functional import get_activation
from keras_mega.layers.normalization import make_normalization
from keras_mega.layers.relative_position_bias import make_relative_position_bias


@keras.saving.register_keras_serializable(package="keras_mega")
class FlatDense(keras.layers.Dense):
    """`keras.layers.Dense` that multiplies `[..., d]` inputs as `[N, d]`
    (see `apply_flat`): same weights, same numbers, faster gradients.

    It keeps every `Dense` feature: LoRA (`enable_lora`) and quantization
    (`quantize("int8")`, `"int4"`, `"float8"`), whose call path flattens
    the same way.
    """

    def call(self, inputs, training=None):
        dense = super().call
        return apply_flat(lambda flat: dense(flat, training=training), inputs)

    def quantized_call(self, inputs, training=None):
        dense = super().quantized_call
        return apply_flat(lambda flat: dense(flat, training=training), inputs)

    def quantize(self, mode=None, type_check=True, config=None):
        # Keras' Dense refuses subclasses unless they opt in: the
        # quantized call above is the same matmul on flattened inputs.
        return super().quantize(mode, type_check=False, config=config)


class MegaSublayer(keras.layers.Layer):
    """Base of a Mega sublayer with a residual: `y = x + f(norm(x))`, or
    `norm(x + f(x))` with post-norm.

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

    def __init__(
        self,
        hidden_dim,
        normalization_type="scalenorm",
        norm_affine=True,
        normalize_before=True,
        activation="silu",
        dropout=0.0,
        feature_dropout=False,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.normalization_type = normalization_type
        self.norm_affine = bool(norm_affine)
        self.normalize_before = bool(normalize_before)
        self.activation = activation
        self.activation_fn = get_activation(activation)
        self.dropout = dropout
        self.feature_dropout = bool(feature_dropout)
        self.initializer_range = initializer_range
        self.norm = make_normalization(
            normalization_type,
            affine=norm_affine,
            name="norm",
            dtype=self.dtype_policy,
        )
        self.dropout_layer = self.make_dropout(dropout, "dropout")

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

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "normalization_type": self.normalization_type,
                "norm_affine": self.norm_affine,
                "normalize_before": self.normalize_before,
                "activation": self.activation,
                "dropout": self.dropout,
                "feature_dropout": self.feature_dropout,
                "initializer_range": self.initializer_range,
            }
        )
        return config


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

    def __init__(
        self,
        hidden_dim,
        shared_dim=64,
        chunk_size=None,
        attention_activation="softmax",
        relative_position_bias="rotary",
        max_sequence_length=2048,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **kwargs,
    ):
        super().__init__(hidden_dim, **kwargs)
        self.shared_dim = int(shared_dim)
        self.chunk_size = check_positive_or_none("chunk_size", chunk_size)
        self.attention_activation = check_choice(
            "attention_activation", attention_activation, ATTENTION_ACTIVATIONS
        )
        self.relative_position_bias = check_choice(
            "relative_position_bias",
            relative_position_bias,
            RELATIVE_POSITION_BIASES,
        )
        self.max_sequence_length = int(max_sequence_length)
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.rel_pos_bias = make_relative_position_bias(
            relative_position_bias,
            max_sequence_length,
            self.chunk_size,
            shared_dim,
            self.initializer_range,
            name="rel_pos_bias",
            dtype=self.dtype_policy,
        )
        self.hidden_dropout_layer = self.make_dropout(
            hidden_dropout, "hidden_dropout"
        )
        self.attention_dropout_layer = keras.layers.Dropout(
            attention_dropout,
            name="attention_dropout",
            dtype=self.dtype_policy,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "shared_dim": self.shared_dim,
                "chunk_size": self.chunk_size,
                "attention_activation": self.attention_activation,
                "relative_position_bias": self.relative_position_bias,
                "max_sequence_length": self.max_sequence_length,
                "hidden_dropout": self.hidden_dropout,
                "attention_dropout": self.attention_dropout,
            }
        )
        return config
