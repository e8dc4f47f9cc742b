"""Where torch's training step holds its memory, with and without remat.

    KERAS_BACKEND=torch python benchmarks/torch_remat_profile.py
        [--lengths 8192,16384] [--modes plain,blocks,nested]
        [--out benchmarks/torch_remat_profile.jsonl]

RSS (`remat_memory.py`) gives one number per step; this script asks torch's
own profiler (`profile_memory=True`, its memory timeline) which tensors
are alive at the allocator's peak of one forward + backward of
`remat_memory.py`'s encoder (chunk 128, batch 1, loss `mean(out ** 2)`,
eager, one thread), and sums them by the profiler's categories:
AUTOGRAD_DETAIL (tensors saved for the backward pass), INPUT, TEMPORARY,
GRADIENT. Modes as in `remat_memory.py`: plain, blocks (a `RematScope`
over the blocks; what `remat=True` does on torch) and nested (over the
blocks and `REMAT_LAYERS`). Each run is its own subprocess.
"""

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys

os.environ["KERAS_BACKEND"] = "torch"

MB = 2**20


def child(length, mode):
    import compare_hf
    import keras
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile
    from torch.profiler._memory_profiler import Action

    from keras_mega.layers.mega_block import REMAT_LAYERS
    from keras_mega.models import MegaBackbone

    config = compare_hf.keras_config(chunk_size=128, max_sequence_length=2048)
    torch.set_num_threads(1)
    keras.utils.set_random_seed(0)
    scope = contextlib.nullcontext()
    if mode in ("blocks", "nested"):
        names = [f"mega_layer_{i}" for i in range(config["num_layers"])]
        if mode == "nested":
            names += list(REMAT_LAYERS)
        scope = keras.RematScope("list_of_layers", layer_names=names)
    with scope:
        backbone = MegaBackbone(**config)
    ids = np.random.default_rng(0).integers(3, 1000, (1, length))
    inputs = {
        "token_ids": torch.tensor(ids, dtype=torch.int32),
        "padding_mask": torch.ones((1, length), dtype=torch.int32),
    }
    backbone(inputs)  # Build outside the profile.
    with profile(
        activities=[ProfilerActivity.CPU],
        profile_memory=True,
        record_shapes=True,
        with_stack=True,
    ) as prof:
        (backbone(inputs) ** 2).mean().backward()
    memory = prof._memory_profile()
    live, current, peak, at_peak = {}, 0, 0, {}
    for _, action, (key, version), size in memory.timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            live[key] = (size, version)
            current += size
        elif action == Action.INCREMENT_VERSION and key in live:
            live[key] = (live[key][0], version)
        elif action == Action.DESTROY and key in live:
            current -= live.pop(key)[0]
        if current > peak:
            peak, at_peak = current, dict(live)
    by_category = collections.Counter()
    for key, (size, version) in at_peak.items():
        category = memory._categories.get(key, version)
        by_category[str(category).split(".")[-1]] += size
    row = {
        "length": length,
        "mode": mode,
        "peak_mb": round(peak / MB, 1),
        "at_peak_mb": {k: round(v / MB, 1) for k, v in by_category.items()},
        "torch": torch.__version__,
    }
    print(json.dumps(row))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="8192,16384")
    parser.add_argument("--modes", default="plain,blocks,nested")
    parser.add_argument("--out")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(int(args.child[0]), args.child[1])
    modes = args.modes.split(",")
    unknown = set(modes) - {"plain", "blocks", "nested"}
    if unknown:
        parser.error(f"unknown --modes {sorted(unknown)}")
    for length in map(int, args.lengths.split(",")):
        for mode in modes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(length), mode],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(f"{length} {mode} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
