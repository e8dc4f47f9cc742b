"""One Mega model, three backends, the same numbers.

Saves a model once as a Keras preset, then loads the preset and prints its
output on each backend: on the one this process runs on, and for the others
by running this same script under KERAS_BACKEND=jax, tensorflow or torch
(one subprocess each). Finally the largest difference between backends.

Usage:
    python examples/same_model_three_backends.py [--backends jax,torch]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

INPUT = np.random.default_rng(0).integers(3, 200, (2, 40)).astype("int32")


def run_one(preset, out_file):
    """Loads the preset on the current backend and writes its output."""
    import keras

    import keras_mega

    backbone = keras_mega.models.MegaBackbone.from_preset(preset)
    mask = np.ones_like(INPUT)
    mask[1, 30:] = 0
    out = backbone.predict(
        {"token_ids": INPUT, "padding_mask": mask}, verbose=0
    )
    np.save(out_file, out)
    print(
        f"{keras.backend.backend():>10}: output {out.shape}, "
        f"mean {out.mean():+.6f}, first {out[0, 0, :3]}"
    )


def compare(backends):
    """Saves a fresh backbone, runs it on each backend; returns the report."""
    import keras

    import keras_mega

    with tempfile.TemporaryDirectory() as tmp:
        preset = os.path.join(tmp, "preset")
        keras_mega.models.MegaBackbone(
            vocabulary_size=200,
            num_layers=2,
            hidden_dim=32,
            intermediate_dim=64,
            shared_dim=16,
            ema_dim=8,
            chunk_size=16,
            dropout=0.0,
        ).save_to_preset(preset)
        outputs = {}
        for backend in backends:
            out_file = os.path.join(tmp, f"{backend}.npy")
            if backend == keras.backend.backend():
                run_one(preset, out_file)
                outputs[backend] = np.load(out_file)
                continue
            env = {
                **os.environ,
                "KERAS_BACKEND": backend,
                "TF_CPP_MIN_LOG_LEVEL": "3",
            }
            subprocess.run(
                [sys.executable, __file__, "--worker", preset, out_file],
                env=env,
                check=True,
            )
            outputs[backend] = np.load(out_file)
    names = list(outputs)
    worst = max(
        (
            float(np.abs(outputs[a] - outputs[b]).max())
            for a in names
            for b in names
        ),
        default=0.0,
    )
    return {"backends": names, "max_difference": worst}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_one(*args.worker)
    report = compare(args.backends.split(","))
    print(json.dumps(report))
    return 0 if report["max_difference"] < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
