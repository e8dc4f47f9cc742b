"""What examples share: the small causal Mega they use without
`--preset`, and the plotting examples' command line and PNG output.

`generate_text.py`, `plot_attention.py` and `plot_ema_kernels.py` import it
from this folder; it is not an example itself.
"""

import argparse

import keras_mega


def parse_args(doc, out, length, argv=None):
    """`--preset`, `--out` (default `out`), `--length` (default `length`)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--preset", help="a keras-mega or HF Mega directory")
    parser.add_argument("--out", default=out)
    parser.add_argument("--length", type=int, default=length)
    return parser.parse_args(argv)


def small_causal_backbone(width=32, **overrides):
    """A fresh 2-layer causal `MegaBackbone`: hidden `width`, intermediate
    2 * width, shared width / 2; `overrides` are other `MegaBackbone`
    arguments."""
    return keras_mega.models.MegaBackbone(
        **{
            "vocabulary_size": 100,
            "num_layers": 2,
            "hidden_dim": width,
            "intermediate_dim": 2 * width,
            "shared_dim": width // 2,
            "causal": True,
            "bidirectional": False,
            **overrides,
        }
    )


def save(fig, path):
    import matplotlib.pyplot as plt  # only the plotting examples need it

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
