"""`quantize()` for keras-mega's models: every projection, no noise.

Keras' `Model.quantize(mode)` calls `quantize` on every leaf layer and
warns for each one that has none, which in Mega are the norms, the EMA, the
relative biases and the dropouts: they keep float weights by design (the
EMA coefficients, norms and biases are tiny and compute in float32). The
projections (`FlatDense`, the heads' `Dense`) and the token embedding are
quantized. A projection left in float after `quantize` is an error here,
not a warning.
"""

import warnings

import keras

# Messages Keras prints while quantizing a model with float-by-design
# layers; neither is actionable by the user.
QUIET = (
    r"Layer \w+ does not have a `quantize` method implemented",
    r"__array__ implementation doesn't accept a copy keyword",
    # The token embedding has no float8 mode; it stays float.
    r"Invalid quantization mode\. Expected one of",
)


def quantizable_layers(model, mode):
    """The layers `quantize(mode)` must turn to `mode`."""
    kinds = [keras.layers.Dense, keras.layers.EinsumDense]
    if mode in ("int8", "int4"):
        kinds.append(keras.layers.Embedding)
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, tuple(kinds))
    ]


class MegaQuantizationMixin:
    """`Model.quantize`, quiet about Mega's float-by-design layers, and
    checked: it raises if a projection stayed float."""

    def quantize(self, mode=None, **kwargs):
        """Quantizes the weights of every projection (`keras.Model.quantize`).

        Quantized: each dense projection (`v_proj`, `mx_proj`, `h_proj`,
        `fc1`, `fc2`, cross attention's projections, the heads' dense
        layers) and, for `"int8"`/`"int4"`, the token embedding (a tied LM
        head then reads the quantized table). Kept in float by design: the
        EMA, norms, relative biases, `qk_weight`/`qk_bias` and an untied LM
        head's own output kernel.

        Args:
            mode: `"int8"`, `"int4"` or `"float8"` (as `keras.Model`).
            **kwargs: passed to `keras.Model.quantize` (`config`,
                `filters`, ...).
        """
        with warnings.catch_warnings():
            for message in QUIET:
                warnings.filterwarnings("ignore", message=message)
            super().quantize(mode, **kwargs)
        if kwargs.get("filters") is not None or mode not in (
            "int8",
            "int4",
            "float8",
        ):
            return
        missed = [
            layer.path
            for layer in quantizable_layers(self, mode)
            if layer.quantization_mode != mode
        ]
        if missed:
            raise RuntimeError(
                f"quantize({mode!r}) left {len(missed)} projection(s) in "
                f"float: {', '.join(missed)}. Please report this to "
                "keras-mega."
            )
