"""Quantized Mega: size on disk and output error against float32.

Builds a backbone the size of `mnaylor/mega-base-wikitext` (HF's released
Mega: vocabulary 50265, hidden 128, 4 layers, rotary bias; random weights,
as nothing may be downloaded here), saves it as a preset in float32, then
quantizes a copy with each mode and reports the preset's size and the
largest output difference, relative to the output's largest magnitude, on
a random batch.

    KERAS_BACKEND=jax python benchmarks/quantization.py [--modes int8 float8]
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import keras_mega
from keras_mega.convert.hf import convert_backbone_config
from keras_mega.models.mega_presets import MEGA_BASE_WIKITEXT_HF_CONFIG

# mega-base-wikitext's config as keras-mega's presets record it.
BASE = convert_backbone_config(
    {"model_type": "mega", **MEGA_BASE_WIKITEXT_HF_CONFIG}
)


def preset_size(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=["int8", "float8"])
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    data = {
        "token_ids": rng.integers(3, 50000, (2, args.length)).astype("int32"),
        "padding_mask": np.ones((2, args.length), "int32"),
    }
    keras.utils.set_random_seed(0)
    backbone = keras_mega.models.MegaBackbone(**BASE)
    expected = keras.ops.convert_to_numpy(backbone(data))
    scale = np.abs(expected).max()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        float_dir = os.path.join(tmp, "float32")
        backbone.save_to_preset(float_dir)
        rows.append(("float32", preset_size(float_dir), 0.0))
        for mode in args.modes:
            model = keras_mega.models.MegaBackbone.from_preset(float_dir)
            model.quantize(mode)
            got = keras.ops.convert_to_numpy(model(data))
            path = os.path.join(tmp, mode)
            model.save_to_preset(path)
            error = float(np.abs(got.astype("float32") - expected).max())
            rows.append((mode, preset_size(path), error / scale))
    print(
        f"backend {keras.config.backend()}, {backbone.count_params():,} "
        f"parameters, batch 2 x {args.length} tokens"
    )
    print("| weights | preset size | max output error / max output |")
    print("|---|---|---|")
    for mode, size, error in rows:
        print(f"| {mode} | {size / 2**20:.1f} MiB | {error:.4f} |")


if __name__ == "__main__":
    main()
