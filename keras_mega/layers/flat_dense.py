"""`keras.layers.Dense` multiplying `[..., d]` inputs as `[N, d]`."""

import keras

from keras_mega.layers.functional import apply_flat


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
