"""Convert a Hugging Face Mega checkpoint and compare it with HF.

Usage:
    python examples/convert_and_compare.py [SRC] [--out DIR]

SRC is an HF Mega directory (or an `hf://` handle where there is a
network). Without SRC, a small HF `MegaForMaskedLM` checkpoint is made
locally first. The conversion is the same as the command line
`python -m keras_mega convert SRC DIR`, which also checks the converted
model against HF and prints the largest difference.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_checkpoint(path):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.MegaConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        nffn_hidden_size=64,
        shared_representation_size=16,
        ema_projection_size=8,
        use_chunking=True,
        chunk_size=16,
        relative_positional_bias="simple",
    )
    transformers.MegaForMaskedLM(config).save_pretrained(path)
    return path


def main(argv=None):
    from keras_mega.__main__ import convert

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src", nargs="?")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = args.src or make_checkpoint(os.path.join(tmp, "hf_mega"))
        out = args.out or os.path.join(tmp, "keras_preset")
        model = convert(src, out, overwrite=True)
        print(f"{type(model).__name__}: {model.count_params():,} parameters")


if __name__ == "__main__":
    main()
