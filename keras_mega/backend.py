"""The only backend-specific code: telling concrete values from traced ones.

Input checks (token ids in range, ...) can only look at values that exist:
eager arrays, not symbolic Keras tensors, JAX tracers or TF graph tensors.
"""

import keras


def is_concrete(x):
    """Whether `x` holds actual values that can be read without tracing."""
    if keras.utils.is_keras_tensor(x):
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return not (tf.is_tensor(x) and tf.is_symbolic_tensor(x))
    return True
