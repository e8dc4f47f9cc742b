"""Small functions shared by the Mega layers (activations, option checks)."""

import difflib
import inspect
import math

import keras
from keras import ops

# HF's `activation` names and what they compute.
ACTIVATIONS = {
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "relu": keras.activations.relu,
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "tanh": keras.activations.tanh,
    "sigmoid": keras.activations.sigmoid,
    "linear": keras.activations.linear,
}
ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
RELATIVE_POSITION_BIASES = ("simple", "rotary")


def check_choice(option, value, choices):
    """Raises a `ValueError` naming `option` unless `value` is in `choices`."""
    if value not in choices:
        raise ValueError(
            f"Unknown {option}={value!r}. Expected one of {tuple(choices)}."
        )
    return value


def get_activation(name):
    return ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]


def laplace(x, mu=math.sqrt(0.5), sigma=math.sqrt(0.25 / math.pi)):
    """Mega's Laplace attention function, a smooth step around `mu`."""
    return 0.5 * (1.0 + ops.erf((x - mu) / (sigma * math.sqrt(2.0))))


def relu2(x):
    return ops.square(ops.relu(x))


def element_attention_function(name):
    return {"laplace": laplace, "relu2": relu2}[name]


def check_positive_or_none(option, value):
    """`None` means off; any other value must be a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(
            f"{option} must be a positive integer or None (off). "
            f"Received: {option}={value!r}"
        )
    return int(value)


def apply_flat(fn, x):
    """`fn` applied to `x` `[..., d]` reshaped to `[N, d]`, then reshaped back.

    Same numbers. XLA on CPU differentiates a rank-3 input's matmul into a
    kernel gradient contracting two axes at once, ~3x slower than the
    rank-2 one: flattening first keeps training steps fast.
    """
    shape = ops.shape(x)
    if len(shape) <= 2:
        return fn(x)
    out = fn(ops.reshape(x, (-1, shape[-1])))
    return ops.reshape(out, tuple(shape[:-1]) + (ops.shape(out)[-1],))


def flat_matmul(x, kernel):
    """`x @ kernel` for `x` `[..., d]`, multiplied as `[N, d]` (`apply_flat`)."""
    return apply_flat(lambda flat: ops.matmul(flat, kernel), x)


# Keras' own constructor arguments, which every model and layer accepts.
KERAS_ARGUMENTS = ("name", "trainable", "dtype")


def check_kwargs(cls, kwargs, allowed=KERAS_ARGUMENTS, hint=""):
    """Raises a `TypeError` for a constructor argument `cls` does not know.

    Keras models accept and drop unknown keyword arguments silently, so a
    typo (`hiden_dim=`) would build the defaults. Keras' own arguments
    (`allowed`: `name`, `trainable`, `dtype`) pass. The error names the
    closest known argument, then `hint`.
    """
    unknown = [key for key in kwargs if key not in allowed]
    if not unknown:
        return
    known = [
        name
        for name in inspect.signature(cls.__init__).parameters
        if name not in ("self", "args", "kwargs")
    ]
    known += [name for name in KERAS_ARGUMENTS if name not in known]
    messages = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        messages.append(f"{key!r}{suggestion}")
    raise TypeError(
        f"{cls.__name__} got unknown argument(s): {', '.join(messages)}. "
        f"Known arguments: {', '.join(known)}. {hint}".rstrip()
    )
