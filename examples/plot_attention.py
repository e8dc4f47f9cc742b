"""Plot the attention maps of a Mega model, layer by layer (PNG).

Usage:
    python examples/plot_attention.py [--preset DIR] [--out attention.png]

Uses `MegaBackbone.feature_extractor(output_attentions=True)`, the Keras
counterpart of HF's `output_attentions`: with chunked attention each layer
gives one map per chunk.
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


def main(argv=None):
    args = parse_args(__doc__, "attention.png", 32, argv)
    if args.preset:
        backbone = keras_mega.models.MegaBackbone.from_preset(args.preset)
    else:
        backbone = small_causal_backbone(ema_dim=8, chunk_size=16)
    ids = (
        np.random.default_rng(0)
        .integers(3, backbone.vocabulary_size, (1, args.length))
        .astype("int32")
    )
    features = backbone.feature_extractor(output_attentions=True)
    out = features({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    maps = [keras.ops.convert_to_numpy(a)[0] for a in out["attentions"]]
    chunks = maps[0].shape[0]
    fig, axes = plt.subplots(
        len(maps), chunks, figsize=(3 * chunks, 3 * len(maps)), squeeze=False
    )
    for i, layer in enumerate(maps):
        for c in range(chunks):
            axes[i, c].imshow(layer[c], cmap="viridis")
            axes[i, c].set_title(f"layer {i}, chunk {c}")
            axes[i, c].set_xlabel("key")
            axes[i, c].set_ylabel("query")
    save(fig, args.out)
    message = f"saved {args.out}: {len(maps)} layers x {chunks} chunks"
    result = {"layers": len(maps), "chunks": chunks}
    if backbone.attention_activation == "softmax":
        # Every query's softmax weights sum to 1.
        error = max(float(np.abs(m.sum(-1) - 1).max()) for m in maps)
        result["row_sum_error"] = error
        message += f", max |row sum - 1| {error:.1e}"
    if backbone.causal:
        # A causal model gives no weight to later tokens of its chunk.
        future = max(float(np.triu(m, k=1).max()) for m in maps)
        result["future_weight"] = future
        message += f", largest weight on a later token {future:.1e}"
    print(message)
    return result


if __name__ == "__main__":
    main()
