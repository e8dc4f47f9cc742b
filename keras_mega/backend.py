"""The only backend-specific code.

- Telling concrete values from traced ones: input checks (token ids in
  range, ...) can only look at values that exist: eager arrays, not
  symbolic Keras tensors, JAX tracers or TF graph tensors, nor the
  placeholder tensors (ones, or torch "meta" tensors without values) that
  Keras builds a model with under its symbolic scope.
- Keeping rematerialization effective on JAX's CPU backend (see
  `keep_remat_barriers`), and where nested remat pays
  (`nested_remat_saves_memory`).
"""

import importlib.metadata
import os

import keras

# XLA's CPU compiler runs this pass early: it deletes the optimization
# barriers that `jax.checkpoint` (Keras' remat on JAX) puts around the
# recomputation, and common-subexpression elimination then merges the
# recomputation back into the forward pass, so every activation is kept.
# Measured with jax 0.10.2: a block stack's compiled temp memory is the same
# with and without remat, and 0.26x of it with this pass disabled.
REMAT_BARRIER_PASS = "cse_barrier_expander"
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "libtpu")


def _xla_flags_with_pass_disabled(flags):
    """`flags` (an XLA_FLAGS string) with `REMAT_BARRIER_PASS` added to its
    `--xla_disable_hlo_passes` list (made if absent)."""
    parts = flags.split()
    for i, part in enumerate(parts):
        if part.startswith("--xla_disable_hlo_passes="):
            parts[i] = f"{part},{REMAT_BARRIER_PASS}"
            return " ".join(parts)
    return " ".join(parts + [f"--xla_disable_hlo_passes={REMAT_BARRIER_PASS}"])


def _jax_runs_on_cpu_only():
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",") == ["cpu"]
    names = (
        d.metadata["Name"] or "" for d in importlib.metadata.distributions()
    )
    return not any(n.lower().startswith(_ACCELERATOR_PLUGINS) for n in names)


def _jax_backends_started():
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # pragma: no cover  (another JAX layout)
        return True
    return backends_are_initialized()


def keep_remat_barriers():
    """On JAX with only the CPU platform, disables `REMAT_BARRIER_PASS`
    through `XLA_FLAGS`, if JAX has not started its backends yet (XLA reads
    the flags once). Called when keras_mega is imported; it changes nothing
    for graphs without barriers. Returns whether the pass is disabled."""
    if keras.backend.backend() != "jax":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if REMAT_BARRIER_PASS in flags:
        return True
    if _jax_backends_started() or not _jax_runs_on_cpu_only():
        return False
    os.environ["XLA_FLAGS"] = _xla_flags_with_pass_disabled(flags)
    return True


_BARRIERS_KEPT = keep_remat_barriers()


def remat_problem():
    """Why remat would keep every activation here, or None: on JAX's CPU
    backend when JAX started before keras_mega could disable the pass."""
    if keras.backend.backend() != "jax" or _BARRIERS_KEPT:
        return None
    import jax

    if jax.default_backend() != "cpu":
        return None
    return (
        "remat=True on JAX's CPU backend saves no memory here: XLA's "
        f"'{REMAT_BARRIER_PASS}' pass removes the barriers that keep the "
        "recomputation apart, because JAX started before keras_mega was "
        "imported. Set XLA_FLAGS="
        f"--xla_disable_hlo_passes={REMAT_BARRIER_PASS} before JAX starts "
        "(or import keras_mega before creating any JAX array)."
    )


def nested_remat_saves_memory():
    """Whether remat inside each block (the units of `REMAT_LAYERS`) saves
    memory over remat of the blocks alone, on this backend.

    Measured (`benchmarks/remat_memory.py`, one training step at 64K
    tokens, both modes in one run): on JAX 2.62 against 3.54 GB (XLA keeps
    one unit's activations at a time); on TensorFlow 3.66 against 3.72 GB
    with a 1.5x longer first step (compile), on torch 3.38 against 3.46
    GB with a 1.2x longer step. Where it saves 2%, `MegaBackbone(remat=True)`
    rematerializes the blocks alone.
    """
    return keras.backend.backend() == "jax"


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
