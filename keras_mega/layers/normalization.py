"""The normalization layers Mega chooses from (`normalization_type`).

Mega passes `epsilon=1e-5` to every norm. `ScaleNorm` and `RMSNorm` compute
in float32 under mixed precision.
"""

import keras
from keras import ops

NORMALIZATION_TYPES = (
    "scalenorm",
    "layernorm",
    "rmsnorm",
    "batchnorm",
    "syncbatchnorm",
    "hf_rmsnorm",
)


class _MeanSquareNorm(keras.layers.Layer):
    """`y = scale * x / sqrt(mean(x ** 2) + epsilon)` over the last axis,
    computed in float32; subclasses choose the learned scale."""

    def __init__(self, epsilon=1e-5, affine=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.affine = affine

    def scale_weight(self, input_shape):
        raise NotImplementedError

    def build(self, input_shape):
        if self.affine:
            name, shape = self.scale_weight(input_shape)
            setattr(
                self,
                name,
                self.add_weight(name=name, shape=shape, initializer="ones"),
            )
        self.built = True

    def scale(self):
        return (
            getattr(self, self.scale_weight(None)[0]) if self.affine else None
        )

    def call(self, x):
        x32 = ops.cast(x, "float32")
        mean_square = ops.mean(ops.square(x32), axis=-1, keepdims=True)
        y = x32 * ops.rsqrt(mean_square + self.epsilon)
        if self.affine:
            y = y * ops.cast(self.scale(), "float32")
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "affine": self.affine})
        return config


@keras.saving.register_keras_serializable(package="keras_mega")
class ScaleNorm(_MeanSquareNorm):
    """Scale normalization: one learned scalar for the whole feature axis.

    `y = g * x / sqrt(mean(x ** 2) + epsilon)`, over the last axis.

    Args:
        epsilon: float. Added to the mean square.
        affine: bool. Whether to learn the scalar `g` (else `g = 1`).

    Example:
    >>> norm = ScaleNorm()
    >>> norm(keras.ops.ones((2, 3, 8))).shape
    (2, 3, 8)
    """

    def scale_weight(self, input_shape):
        return "scalar", (1,)


@keras.saving.register_keras_serializable(package="keras_mega")
class RMSNorm(_MeanSquareNorm):
    """Root-mean-square normalization with a per-feature scale.

    `y = w * x / sqrt(mean(x ** 2) + epsilon)`, over the last axis.

    This is the RMSNorm of the Mega paper. Hugging Face's `MegaRMSNorm`
    discards the normalization and only multiplies by `w`; checkpoints
    trained with it load as `normalization_type="hf_rmsnorm"` (see
    `HFRMSNorm`).

    Args:
        epsilon: float. Added to the mean square.
        affine: bool. Whether to learn the per-feature scale `w`.

    Example:
    >>> RMSNorm()(keras.ops.ones((2, 3, 8))).shape
    (2, 3, 8)
    """

    def scale_weight(self, input_shape):
        return "weight", (None if input_shape is None else input_shape[-1],)


@keras.saving.register_keras_serializable(package="keras_mega")
class HFRMSNorm(RMSNorm):
    """What Hugging Face's `MegaRMSNorm` computes: `y = w * x`, no division.

    HF's forward computes the root mean square and throws it away, so its
    "rmsnorm" models never normalize. This layer reproduces that exactly,
    so that HF checkpoints with `normalization_type="rmsnorm"` keep their
    numbers. Use `RMSNorm` for new models.
    """

    def call(self, x):
        if not self.affine:
            return x
        return x * ops.cast(self.weight, x.dtype)


def make_normalization(
    normalization_type, affine=True, epsilon=1e-5, name=None, dtype=None
):
    """Returns the norm layer named by `normalization_type`.

    Every norm computes in float32 under a float16/bfloat16 policy (Keras'
    LayerNormalization and BatchNormalization do so themselves).

    Args:
        normalization_type: str. One of `NORMALIZATION_TYPES`.
        affine: bool. Whether the norm learns its scale (and shift).
        epsilon: float.
        name: str. The layer's name.
        dtype: the dtype policy of the layer.
    """
    if normalization_type == "scalenorm":
        return ScaleNorm(epsilon=epsilon, affine=affine, name=name, dtype=dtype)
    if normalization_type == "rmsnorm":
        return RMSNorm(epsilon=epsilon, affine=affine, name=name, dtype=dtype)
    if normalization_type == "hf_rmsnorm":
        return HFRMSNorm(epsilon=epsilon, affine=affine, name=name, dtype=dtype)
    if normalization_type == "layernorm":
        return keras.layers.LayerNormalization(
            epsilon=epsilon,
            center=affine,
            scale=affine,
            name=name,
            dtype=dtype,
        )
    if normalization_type in ("batchnorm", "syncbatchnorm"):
        # torch's BatchNorm momentum 0.1 is Keras' 0.9. Statistics run over
        # batch and time, padding included, as in fairseq and HF. Keras
        # synchronizes replicas only on TensorFlow; on JAX a distributed
        # batch is one global array, so its statistics are global anyway.
        synchronized = (
            normalization_type == "syncbatchnorm"
            and keras.backend.backend() == "tensorflow"
        )
        return keras.layers.BatchNormalization(
            epsilon=epsilon,
            momentum=0.9,
            center=affine,
            scale=affine,
            synchronized=synchronized,
            name=name,
            dtype=dtype,
        )
    raise ValueError(
        f"Unknown normalization_type={normalization_type!r}. "
        f"Expected one of {NORMALIZATION_TYPES}."
    )
