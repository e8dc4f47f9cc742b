"""Peak memory of one training step, with and without rematerialization.

    KERAS_BACKEND=jax python benchmarks/remat_memory.py
        [--lengths 16384,65536,262144] [--cap-gib 8] [--search]
        [--out benchmarks/remat_memory.jsonl] [--quick]
        [--modes plain,remat,blocks,nested]

The LRA-Text-sized encoder of `compare_hf.py` (4 layers, hidden 128,
intermediate 256, shared 64, EMA 16, ScaleNorm post-norm, softmax,
bidirectional, rotary) with chunk 128, batch 1, one `train_on_batch` step
(forward, backward, AdamW; compiled) at each length, with and without
`MegaBackbone(remat=True)` (`keras.RematScope("list_of_layers")` over the
blocks, and on JAX over the units nested in them). `--modes` picks among
plain, remat, blocks (a `RematScope` over the blocks alone) and nested
(one over the blocks and `REMAT_LAYERS`, on every backend). Every run is
its own subprocess (glibc's mmap threshold fixed, see `run`); its peak
RSS comes from `resource.getrusage` (the baseline before the step is
reported too). A watchdog stops a run whose RSS
passes `--cap-gib`, and a length whose peak, extrapolated linearly from the
shorter lengths already measured, would pass the cap is skipped.
`--search` keeps doubling the length past the last one while the
prediction fits, to find the longest length that fits the cap; the length
that would fit in 24 GiB is then extrapolated linearly from the measured
growth (labelled as extrapolated). Writes JSON lines and prints a table.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import compare_hf  # noqa: E402  (benchmarks/, the script's directory)

# compare_hf.py's LRA-Text encoder, chunked (2048: MegaBackbone's default).
CONFIG = compare_hf.keras_config(chunk_size=128, max_sequence_length=2048)
GIB = 1024**3


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(length, mode):
    import contextlib

    import keras
    import numpy as np

    from keras_mega.layers.mega_block import REMAT_LAYERS
    from keras_mega.models import MegaBackbone

    keras.utils.set_random_seed(0)
    # "remat": `remat=True` (nested on JAX only); "blocks": a
    # `keras.RematScope` over the blocks alone; "nested": over the blocks
    # and the units nested in them, on any backend.
    scope = contextlib.nullcontext()
    if mode in ("blocks", "nested"):
        blocks = [f"mega_layer_{i}" for i in range(CONFIG["num_layers"])]
        nested = list(REMAT_LAYERS) if mode == "nested" else []
        scope = keras.RematScope("list_of_layers", layer_names=blocks + nested)
    with scope:
        backbone = MegaBackbone(**CONFIG, remat=mode == "remat")
    ids = np.random.default_rng(0).integers(3, 1000, (1, length))
    inputs = {
        "token_ids": ids.astype("int32"),
        "padding_mask": np.ones_like(ids),
    }
    target = np.zeros((1, length, CONFIG["hidden_dim"]), "float32")
    backbone.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss="mse",
        jit_compile=keras.config.backend() != "torch",
    )
    baseline = rss_mb()
    start = time.perf_counter()
    loss = backbone.train_on_batch(inputs, target)
    step_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "baseline_mb": baseline,
                "peak_mb": rss_mb(),
                "first_step_s": step_s,
                "loss": float(loss),
            }
        )
    )


def run(length, mode, cap_bytes):
    """Runs one measurement in a subprocess under the RSS watchdog."""
    cmd = [sys.executable, __file__, "--child", str(length), "--mode", mode]
    # glibc's mmap threshold grows after large frees, and then the step's
    # freed buffers stay in its heap, fragmented: torch's peak RSS at 64K
    # with remat read 4.46 GB so, 3.41 GB with the threshold fixed. Fixed
    # for every backend, so the RSS is what the step holds.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    peak_seen = 0
    stopped = False
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                        peak_seen = max(peak_seen, rss)
        except FileNotFoundError:
            break
        if peak_seen > cap_bytes:
            proc.kill()
            stopped = True
            break
        time.sleep(0.2)
    out, _ = proc.communicate()
    row = {"length": length, "remat": mode != "plain", "mode": mode}
    if stopped:
        row.update(
            status="stopped at cap",
            peak_mb=peak_seen / 2**20,
        )
        return row
    if proc.returncode != 0:
        row.update(status=f"failed (exit {proc.returncode})")
        return row
    row.update(json.loads(out.strip().splitlines()[-1]), status="ok")
    return row


def linear_fit(rows):
    """`(a, b)` with peak_mb = a + b * length, from the two longest runs."""
    ok = sorted(
        (r for r in rows if r["status"] == "ok"), key=lambda r: r["length"]
    )
    if len(ok) < 2:
        return None
    r0, r1 = ok[-2], ok[-1]
    b = (r1["peak_mb"] - r0["peak_mb"]) / (r1["length"] - r0["length"])
    return r1["peak_mb"] - b * r1["length"], b


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=int, default=None)
    parser.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--lengths", default="16384,65536,262144")
    parser.add_argument("--cap-gib", type=float, default=8.0)
    parser.add_argument("--search", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--modes",
        default="plain,remat",
        help="which to run, comma-separated: plain (no remat), remat "
        "(remat=True: nested on JAX, the blocks alone elsewhere), blocks (a "
        "RematScope over the blocks alone), nested (one over the blocks and "
        "REMAT_LAYERS)",
    )
    parser.add_argument("--out", default="benchmarks/remat_memory.jsonl")
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, args.mode)
    if args.quick:
        args.lengths = "4096,16384"
    lengths = [int(x) for x in args.lengths.split(",")]
    cap_mb = args.cap_gib * 1024
    import keras

    backend = keras.config.backend()
    chosen = args.modes.split(",")
    unknown = set(chosen) - {"plain", "remat", "blocks", "nested"}
    if unknown:
        parser.error(
            f"unknown --modes {sorted(unknown)}: "
            "choose from plain, remat, blocks, nested"
        )
    rows = {mode: [] for mode in chosen}
    for mode in chosen:
        todo = list(lengths)
        while todo:
            length = todo.pop(0)
            fit = linear_fit(rows[mode])
            predicted = fit and fit[0] + fit[1] * length
            if predicted and predicted > cap_mb:
                row = {
                    "length": length,
                    "remat": mode != "plain",
                    "mode": mode,
                    "status": f"skipped: predicted {predicted / 1024:.1f} "
                    f"GiB > cap {args.cap_gib:g} GiB",
                    "predicted_peak_mb": predicted,
                }
            else:
                row = run(length, mode, args.cap_gib * GIB)
            row.update(backend=backend, chunk_size=CONFIG["chunk_size"])
            rows[mode].append(row)
            print(json.dumps(row), flush=True)
            if args.search and not todo and row["status"] == "ok":
                todo.append(length * 2)

    summary = []
    for mode in chosen:
        ok = [r for r in rows[mode] if r["status"] == "ok"]
        fit = linear_fit(rows[mode])
        entry = {
            "summary": True,
            "remat": mode != "plain",
            "mode": mode,
            "backend": backend,
            "cap_gib": args.cap_gib,
            "longest_measured_within_cap": max(
                (r["length"] for r in ok), default=None
            ),
        }
        if fit:
            entry.update(
                growth_mb_per_1k_tokens=fit[1] * 1024,
                extrapolated_length_at_cap=int((cap_mb - fit[0]) / fit[1]),
                extrapolated_length_at_24_gib=int(
                    (24 * 1024 - fit[0]) / fit[1]
                ),
            )
        summary.append(entry)
    with open(args.out, "a") as f:
        for mode in chosen:
            for row in rows[mode]:
                f.write(json.dumps(row) + "\n")
        for entry in summary:
            f.write(json.dumps(entry) + "\n")

    print(f"\nPeak RSS of one training step, backend {backend}, chunk 128:")
    print("| tokens | " + " | ".join(f"{m} (MB)" for m in chosen) + " |")
    print("|---|" + "---|" * len(chosen))
    by_length = {}
    for mode in chosen:
        for row in rows[mode]:
            by_length.setdefault(row["length"], {})[mode] = row

    def cell(row):
        if row is None:
            return "not run"
        if row["status"] == "ok":
            return f"{row['peak_mb']:.0f} (step {row['first_step_s']:.0f} s)"
        return row["status"]

    for length in sorted(by_length):
        cells = [cell(by_length[length].get(mode)) for mode in chosen]
        print(f"| {length} | " + " | ".join(cells) + " |")
    for entry in summary:
        name = entry["mode"]
        print(
            f"{name}: longest measured within {args.cap_gib:g} GiB: "
            f"{entry['longest_measured_within_cap']} tokens"
            + (
                f"; growth {entry['growth_mb_per_1k_tokens']:.1f} MB per 1K "
                f"tokens; extrapolated: {entry['extrapolated_length_at_cap']}"
                f" tokens at {args.cap_gib:g} GiB, "
                f"{entry['extrapolated_length_at_24_gib']} at 24 GiB"
                if "growth_mb_per_1k_tokens" in entry
                else ""
            )
        )


if __name__ == "__main__":
    main()
