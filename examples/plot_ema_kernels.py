"""Plot the EMA kernels and timescales of a Mega model (matplotlib, PNG).

Usage:
    python examples/plot_ema_kernels.py [--preset DIR] [--out ema.png]

Without `--preset`, it compares the paper's EMA initialization with the
opt-in "timescales" one on a fresh model. For each layer it plots the
impulse response (kernel) of a few channels and the distribution of the
per-step decays `q` as timescales `1 / (1 - q)` in tokens, and prints each
model's slowest timescale (about 6 tokens with the paper's init, a few
thousand with "timescales": `ema_max_timescale` 1,024 plus its jitter).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from example_utils import parse_args  # noqa: E402
from example_utils import save  # noqa: E402
from example_utils import small_causal_backbone  # noqa: E402

import keras_mega  # noqa: E402


def ema_layers(backbone):
    return [block.mega_layer.ema_gate for block in backbone.mega_layers]


def describe(ema, length):
    _, q, _ = ema.coefficients()
    kernel = keras.ops.convert_to_numpy(ema.kernel(length))
    timescales = 1.0 / (1.0 - keras.ops.convert_to_numpy(q).ravel())
    return kernel, timescales


def main(argv=None):
    args = parse_args(__doc__, "ema_kernels.png", 256, argv)
    if args.preset:
        models = {
            "model": keras_mega.models.MegaBackbone.from_preset(args.preset)
        }
    else:
        models = {
            init: small_causal_backbone(ema_dim=16, ema_init=init)
            for init in ("paper", "timescales")
        }
    rows = max(len(ema_layers(m)) for m in models.values())
    slowest = {}
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.2 * rows), squeeze=False)
    for name, backbone in models.items():
        for i, ema in enumerate(ema_layers(backbone)):
            kernel, timescales = describe(ema, args.length)
            slowest[name] = max(slowest.get(name, 0.0), timescales.max())
            axes[i, 0].plot(
                np.abs(kernel[:4]).T,
                alpha=0.8,
                label=[f"{name} ch{c}" for c in range(4)],
            )
            axes[i, 0].set_yscale("log")
            axes[i, 0].set_title(f"layer {i}: |kernel| of 4 channels")
            axes[i, 0].set_xlabel("lag (tokens)")
            axes[i, 1].hist(
                np.log10(timescales), bins=40, alpha=0.6, label=name
            )
            axes[i, 1].set_title(f"layer {i}: EMA timescales")
            axes[i, 1].set_xlabel("log10 timescale (tokens)")
    axes[0, 1].legend()
    save(fig, args.out)
    for name, tokens in slowest.items():
        print(f"{name}: slowest EMA timescale {tokens:,.1f} tokens")
    print(f"saved {args.out}")
    return {name: float(tokens) for name, tokens in slowest.items()}


if __name__ == "__main__":
    main()
