"""The long-range recall ladder: does information survive chunked attention?

Task (see `recall_task.py`): a causal model reads a class token at position
0 and `L - 1` random filler tokens and names the class (10 classes, chance
10%) at the last position. Cells: L in {128, 512, 2048} x {full attention,
chunked with Mega's EMA init ("paper"), chunked with the opt-in slow-decay
init ("timescales")} x seeds; chunk 32 / 64 / 128 for L = 128 / 512 / 2048.
Model: `MegaBackbone` (2 layers, hidden 64, intermediate 128, shared 32,
EMA 16, causal, LayerNorm pre-norm, softmax, no dropout) + a Dense head on
the last position, AdamW, batch 32, `model.fit` on fresh batches.

Reported per cell: the first step at which accuracy on a fixed validation
set (256 sequences, measured every `--eval-every` steps) reaches 95%, or
"not reached" within `--steps`. Each finished cell is appended to `--out`
as a JSON line at once, so a long run can be stopped and resumed
(`--resume` skips the cells already there).

`--hf` adds the Hugging Face reference (transformers < 5 `MegaModel`,
`is_decoder=True`, `bidirectional=False`, + a linear head, torch AdamW) on
the same data, validation set and accuracy, for L = 128 and 512 (HF has only
the paper's init).

Usage:
    KERAS_BACKEND=jax python benchmarks/recall_ladder.py --quick
    KERAS_BACKEND=jax python benchmarks/recall_ladder.py --L 512 --hf \
        --out ladder.jsonl --resume
    python benchmarks/recall_ladder.py --table ladder.jsonl
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import recall_task  # noqa: E402

LENGTHS = (128, 512, 2048)
# name: (attention, init)
CELLS = {
    "full": ("full", "paper"),
    "chunk-paper": ("chunked", "paper"),
    "chunk-timescales": ("chunked", "timescales"),
    # Not in the default ladder: does the new init hurt full attention?
    "full-timescales": ("full", "timescales"),
}
DEFAULT_CELLS = ("full", "chunk-paper", "chunk-timescales")
HF_CELLS = ("full", "chunk-paper")
HF_LENGTHS = (128, 512)
DEFAULT_STEPS = {128: 600, 512: 1000, 2048: 1500}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="L=128 only")
    parser.add_argument("--L", type=int, nargs="+", choices=LENGTHS)
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps",
        type=int,
        help="training budget per cell (default: "
        + ", ".join(f"{n} at L={k}" for k, n in DEFAULT_STEPS.items())
        + ")",
    )
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument(
        "--no-early-stop",
        action="store_true",
        help="train the whole budget even after reaching 95%%",
    )
    parser.add_argument("--hf", action="store_true", help="add HF reference")
    parser.add_argument(
        "--hf-only", action="store_true", help="only the HF reference"
    )
    parser.add_argument("--out", help="JSONL file to append results to")
    parser.add_argument(
        "--resume", action="store_true", help="skip cells already in --out"
    )
    parser.add_argument(
        "--table", metavar="JSONL", help="print the table of a JSONL and exit"
    )
    return parser.parse_args(argv)


def cell_key(row):
    return (row["L"], row["attention"], row["init"], row["impl"], row["seed"])


def plan(args):
    lengths = [128] if args.quick else (args.L or list(LENGTHS))
    names = args.cells or list(DEFAULT_CELLS)
    jobs = []
    for length in lengths:
        for name in names:
            attention, init = CELLS[name]
            for seed in args.seeds:
                if not args.hf_only:
                    jobs.append((length, attention, init, "keras", seed))
                if (
                    (args.hf or args.hf_only)
                    and length in HF_LENGTHS
                    and name in HF_CELLS
                ):
                    jobs.append((length, attention, init, "hf", seed))
    return jobs


def run_cell(length, attention, init, impl, seed, args):
    chunk = None
    if attention == "chunked":
        chunk = recall_task.CHUNK_FOR_LENGTH[length]
    steps = args.steps or DEFAULT_STEPS[length]
    label = f"L={length} {attention} init={init} {impl} seed={seed}"
    print(f"== {label} (chunk {chunk}, budget {steps} steps)", flush=True)
    common = dict(
        chunk_size=chunk,
        seed=seed,
        steps=steps,
        eval_every=args.eval_every,
        early_stop=not args.no_early_stop,
        log=lambda line: print(line, flush=True),
    )
    if impl == "hf":
        result = recall_task.train_hf(length, **common)
    else:
        result = recall_task.train_keras(length, ema_init=init, **common)
    return {
        "L": length,
        "attention": attention,
        "init": init,
        "impl": impl,
        "seed": seed,
        "chunk_size": chunk,
        "budget": steps,
        "steps_to_95": result["steps_to_95"],
        "final_accuracy": result["final_accuracy"],
        "steps_run": result["steps_run"],
        "seconds": result["seconds"],
        "backend": backend_name(impl),
        # Rows without it (keras) were trained before the initialization fix,
        # when damping/decay and the rotary alpha/b_param drew equal values.
        "init_draws": "independent",
    }


def backend_name(impl):
    if impl == "hf":
        return "torch (HF)"
    import keras

    return keras.backend.backend()


SHARED_DRAWS = "\u2020"  # dagger: trained with the shared initial draws


def format_table(rows):
    """Markdown: one row per (L, attention, init, impl), one column per seed.

    The newest row of a cell wins. Keras cells trained before the
    initialization fix (no `init_draws` field) are marked with a dagger.
    """
    groups = {}
    for row in rows:
        key = (row["L"], row["attention"], row["init"], row["impl"])
        groups.setdefault(key, {})[row["seed"]] = row
    seeds = sorted({row["seed"] for row in rows})
    lines = [
        "| L | chunk | attention | EMA init | impl | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(seeds),
    ]
    order = {"full": 0, "chunked": 1}
    for key in sorted(
        groups, key=lambda k: (k[0], order[k[1]], k[2], k[3] != "keras", k[3])
    ):
        length, attention, init, impl = key
        cells = []
        for s in seeds:
            row = groups[key].get(s)
            if row is None:
                cells.append("-")
            elif row["steps_to_95"] is None:
                cells.append(
                    f"not reached in {row['steps_run']} "
                    f"({row['final_accuracy']:.0%})"
                )
            else:
                cells.append(f"**{row['steps_to_95']}**")
            if row is not None and impl == "keras" and "init_draws" not in row:
                cells[-1] += " " + SHARED_DRAWS
        chunk = next(iter(groups[key].values()))["chunk_size"] or "-"
        lines.append(
            f"| {length} | {chunk} | {attention} | {init} | {impl} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def read_jsonl(path):
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print(format_table(read_jsonl(args.table)))
        return 0
    done = {cell_key(r) for r in read_jsonl(args.out)} if args.resume else set()
    rows = []
    for job in plan(args):
        if job in done:
            print(f"== skipping {job} (already in {args.out})")
            continue
        row = run_cell(*job, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
