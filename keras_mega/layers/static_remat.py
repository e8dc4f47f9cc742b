"""Keras' remat of a layer's call, its non-tensor arguments kept static."""

import keras


class StaticRemat:
    """Mixin: the layer's `rematerialized_call` passes only tensors through
    Keras' `remat`, positionally.

    JAX's `jax.checkpoint` (Keras' remat there) would trace every
    argument, so Python branches on `training` or on a `None` input would
    fail; TensorFlow's `tf.recompute_grad` takes no keyword arguments
    outside eager execution. Keras decides which layers it remats (the
    `keras.RematScope` active when the layer was created); this mixin only
    changes how. A layer can also make a part of its own call a unit of
    its own (`rematerialized_part`: nested remat, that part's activations
    are kept only while the backward pass goes through it).
    """

    def rematerialized_part(self, part):
        """`part` (a function: tensors positional, the rest keywords) as a
        nested remat unit when Keras remats this whole layer (a
        `RematScope("list_of_layers")` naming it, or "full"); else `part`.
        Keras' other modes decide per call from its output size or
        activation, and keep their behavior."""
        mode = self._remat_mode  # Keras' `RematScope` at construction.
        whole = mode is not None and (
            mode.mode == "full"
            or (mode.mode == "list_of_layers" and self.name in mode.layer_names)
        )
        return self.rematerialized_call(part) if whole else part

    def rematerialized_call(self, layer_call, *args, **kwargs):
        call = super().rematerialized_call(layer_call, *args, **kwargs)
        if call is layer_call:  # No remat for this layer.
            return call

        def rematerialized(*args, **kwargs):
            names = [k for k, v in kwargs.items() if keras.ops.is_tensor(v)]
            static = {k: v for k, v in kwargs.items() if k not in names}

            def with_static(*values):
                tensors = dict(zip(names, values[len(args) :]))
                return layer_call(*values[: len(args)], **tensors, **static)

            return keras.remat(with_static)(*args, *map(kwargs.get, names))

        return rematerialized
