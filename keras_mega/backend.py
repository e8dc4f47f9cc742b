"""The only backend-specific code: telling concrete values from traced ones.

Input checks (token ids in range, ...) can only look at values that exist:
eager arrays, not symbolic Keras tensors, JAX tracers or TF graph tensors,
nor the placeholder tensors (ones, or torch "meta" tensors without values)
that Keras builds a model with under its symbolic scope.
"""

import keras


def _in_symbolic_scope():
    """Whether Keras is inferring shapes (`compute_output_spec`)."""
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # pragma: no cover  (another Keras layout)
        return False
    return in_symbolic_scope()


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
    if backend == "torch":
        if getattr(x, "is_meta", False):
            return False
        # Torch builds models eagerly on placeholder tensors of ones.
        return not (keras.ops.is_tensor(x) and _in_symbolic_scope())
    return True
