"""MQAR (multi-query associative recall, Zoology): Mega against a Transformer.

Task (Arora, Eyuboglu et al., "Zoology", 2023; written here from the
published definition): a sequence of `L` tokens starts with `P` key-value
pairs `k1 v1 k2 v2 ...` (keys drawn without replacement from the lower half
of the vocabulary, ids 1 .. V/2 - 1; values from the upper half, V/2 ..
V - 1). The rest of the sequence holds one query of each key, at even
offsets `2 * g` after the pairs, the gaps `g` drawn without replacement with
probability ~ `g ** (alpha - 1)` (alpha = 0.01: a power law that favours
short gaps). Every other position holds a uniformly random token of the
whole vocabulary. The label of a query position is the next token, the
key's value; no other position has a label. Query accuracy: the fraction of
queries whose value is the argmax.

The causal models compute their head only at the query positions (the loss
of the others is masked out anyway, and a 8192-way head at every position
would dominate the step on a CPU). Data: fresh batches every step, a fixed
test set of `--test-size` sequences drawn from its own seed.

Models (`--models`), width `W`, 2 layers by default:
  mega-full         MegaBackbone, causal, LayerNorm pre-norm, softmax,
                    rotary bias, hidden W, intermediate 2W, shared W/2,
                    EMA dim 16, FFN 2W, no dropout; full attention
  mega-chunk        the same with chunk_size = L/4, paper EMA init
  mega-chunk-ts     the same with ema_init="timescales"
  transformer       keras-hub TokenAndPositionEmbedding + TransformerDecoder
                    (post-norm, as keras-hub's default; 4 heads) with its
                    FFN width chosen so that the parameter count matches
                    mega-full's (printed in every row)
All end in Dense(V) on the query positions. `--final-norm` adds a
LayerNorm before the head of the Mega models (MegaBackbone has none, as in
the paper and HF). AdamW (weight decay 0.01), batch 64, constant learning
rate after an optional linear `--warmup`, `model.fit`.

Each finished run (one model, size, width, lr, seed) is appended to `--out`
as a JSON line with its learning curve; `--resume` skips runs already
there; `--table` prints the tables of a JSONL.

Usage:
    KERAS_BACKEND=jax python benchmarks/mqar.py --quick
    KERAS_BACKEND=jax python benchmarks/mqar.py --sizes 64 --widths 64 \
        --lrs 1e-3 3e-3 --steps 1500 --out benchmarks/mqar.jsonl --resume
    python benchmarks/mqar.py --table benchmarks/mqar.jsonl
"""

import argparse
import functools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recall_ladder import read_jsonl
from recall_task import TRAIN
from recall_task import accuracy
from recall_task import mega_options

# Sequence length -> number of key-value pairs: the three sizes,
# and 32 for --quick and the CI test.
SIZES = {32: 4, 64: 4, 128: 8, 256: 16}
DEFAULT_SIZES = (64, 128, 256)
MODELS = ("mega-full", "mega-chunk", "mega-chunk-ts", "transformer")
POWER_A = 0.01
IGNORE = -100


# === Data ===


def _distinct_rows(rng, n, k, low, high):
    """`[n, k]` integers from `low .. high-1`, distinct within each row
    (uniform over such rows: rejection of rows with a repeat)."""
    if high - low < k:
        raise ValueError("fewer ids than draws")
    out = rng.integers(low, high, size=(n, k))
    while True:
        srt = np.sort(out, axis=1)
        bad = np.nonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0]
        if not len(bad):
            return out
        out[bad] = rng.integers(low, high, size=(len(bad), k))


def make_mqar(
    rng, num_examples, seq_len, num_pairs, vocab_size, power_a=POWER_A
):
    """Zoology's MQAR, from its definition.

    Returns `(inputs [n, L] int32, labels [n, L] int32)`, labels `IGNORE`
    except at the query positions, where they hold the queried key's value
    (the next token to predict).
    """
    if seq_len % 2 or vocab_size <= seq_len:
        raise ValueError("need an even seq_len < vocab_size")
    context = 2 * num_pairs
    if 4 * num_pairs > seq_len:
        raise ValueError("need 4 * num_pairs <= seq_len")
    half = vocab_size // 2
    n = num_examples
    # Keys from 1 .. half-1, values from half .. V-1, without replacement
    # within an example: uniform draws, rows with a repeat drawn again
    # (the same distribution as a random permutation's first P entries, at
    # O(P) per row instead of an argsort over V/2).
    keys = _distinct_rows(rng, n, num_pairs, 1, half)
    values = _distinct_rows(rng, n, num_pairs, half, vocab_size)
    space = (seq_len - context) // 2
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    p = p / p.sum()
    # Gaps without replacement, weighted: Gumbel-top-k on log p.
    gumbel = -np.log(-np.log(rng.random((n, space))))
    gaps = np.argsort(-(np.log(p)[None, :] + gumbel), axis=1)[:, :num_pairs]

    inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    query_pos = context + 2 * gaps  # where the key is repeated
    rows = np.arange(n)[:, None]
    inputs[rows, query_pos] = keys
    labels = np.full((n, seq_len), IGNORE, dtype=np.int64)
    labels[rows, query_pos] = values
    filler = rng.integers(0, vocab_size, size=(n, seq_len))
    is_query = np.zeros((n, seq_len), dtype=bool)
    is_query[rows, query_pos] = True
    is_query[:, :context] = True
    inputs = np.where(is_query, inputs, filler)
    return inputs.astype("int32"), labels.astype("int32")


def query_view(inputs, labels):
    """`(inputs, query_positions [n, P], targets [n, P])` from full labels.

    Positions come sorted, `P` is the same in every example.
    """
    mask = labels != IGNORE
    num = mask.sum(1)
    if not np.all(num == num[0]):
        raise ValueError("examples differ in their number of queries")
    positions = np.nonzero(mask)[1].reshape(len(labels), num[0])
    targets = np.take_along_axis(labels, positions, axis=1)
    return inputs, positions.astype("int32"), targets.astype("int32")


# === Models ===


def transformer_ffn_dim(target_params, width, num_layers, seq_len):
    """FFN width of a keras-hub Transformer (position embedding + layers,
    token embedding excluded) whose parameter count is closest to
    `target_params`."""
    # Per layer: attention 4 W^2 + 4 W, two LayerNorms 4 W, FFN 2 W F + F + W.
    fixed = seq_len * width + num_layers * (4 * width * width + 9 * width)
    per_f = num_layers * (2 * width + 1)
    return max(1, round((target_params - fixed) / per_f))


def mega_block_params(backbone):
    return backbone.count_params() - int(
        np.prod(backbone.token_embedding.embeddings.shape)
    )


def transformer_stack(
    x, width, num_layers, ffn_dim, padding_mask, causal, num_heads=4
):
    import keras_hub

    for i in range(num_layers):
        layer_cls = (
            keras_hub.layers.TransformerDecoder
            if causal
            else keras_hub.layers.TransformerEncoder
        )
        layer = layer_cls(
            intermediate_dim=ffn_dim,
            num_heads=num_heads,
            activation="gelu",
            name=f"transformer_layer_{i}",
        )
        if causal:
            x = layer(x, decoder_padding_mask=padding_mask)
        else:
            x = layer(x, padding_mask=padding_mask)
    return x


def build_mqar_model(
    model_name,
    seq_len,
    num_pairs,
    width,
    vocab_size,
    num_layers=2,
    final_norm=False,
    chunk_size=None,
    **mega_overrides,
):
    """Returns `(keras.Model, info)`: inputs `token_ids`, `query_positions`
    -> logits `[B, P, V]` at the query positions.

    `chunk_size` replaces the chunked models' default L/4."""
    import keras
    import keras_hub

    from keras_mega.models import MegaBackbone

    token_ids = keras.Input(shape=(seq_len,), dtype="int32", name="token_ids")
    positions = keras.Input(
        shape=(num_pairs,), dtype="int32", name="query_positions"
    )
    ones = keras.ops.ones_like(token_ids)

    def backbone(**options):
        return MegaBackbone(
            **mega_options(
                width,
                num_layers,
                vocab_size,
                seq_len,
                bidirectional=False,
                causal=True,
                **options,
                **mega_overrides,
            )
        )

    # Mega's size decides the Transformer's (parameters matched).
    mega = backbone()
    target = mega_block_params(mega)
    info = {"mega_block_params": target}
    if model_name == "transformer":
        ffn = transformer_ffn_dim(target, width, num_layers, seq_len)
        # tie_weights=True only stops keras-hub from creating an unused
        # reverse-embedding matrix (V x W); the head is the Dense below.
        embed = keras_hub.layers.TokenAndPositionEmbedding(
            vocab_size, seq_len, width, tie_weights=True, name="embedding"
        )
        x = embed(token_ids)
        x = transformer_stack(x, width, num_layers, ffn, ones, causal=True)
        info["transformer_ffn_dim"] = ffn
    else:
        chunk = None
        if model_name in ("mega-chunk", "mega-chunk-ts"):
            chunk = chunk_size or seq_len // 4
        init = "timescales" if model_name == "mega-chunk-ts" else "paper"
        if chunk or init != "paper":
            mega = backbone(chunk_size=chunk, ema_init=init)
        x = mega({"token_ids": token_ids, "padding_mask": ones})
        info["chunk_size"] = chunk
        info["ema_init"] = init
        if final_norm:
            x = keras.layers.LayerNormalization(
                epsilon=1e-5, name="final_norm"
            )(x)
    x = keras.ops.take_along_axis(x, positions[:, :, None], axis=1)
    logits = keras.layers.Dense(vocab_size, name="head")(x)
    model = keras.Model(
        {"token_ids": token_ids, "query_positions": positions}, logits
    )
    head_and_embed = 2 * vocab_size * width + vocab_size
    info["params"] = model.count_params()
    info["params_without_embeddings_and_head"] = (
        model.count_params() - head_and_embed
    )
    return model, info


# === Training ===


def learning_rate(lr, warmup):
    import keras

    if not warmup:
        return lr

    @keras.saving.register_keras_serializable(package="benchmarks")
    class Warmup(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.cast(step, "float32")
            return lr * keras.ops.minimum(1.0, (step + 1.0) / warmup)

        def get_config(self):
            return {}

    return Warmup()


def fit_with_curve(
    model,
    batches,
    evaluate,
    steps,
    eval_every,
    lr,
    warmup=0,
    log=print,
    stop_at=None,
    steps_per_execution=1,
):
    """`model.fit` on a generator with `evaluate()` every `eval_every`
    steps; returns the run's `history` (`[(step, acc, train_loss)]`), its
    final and best accuracy, `steps_run`, `seconds` and `seconds_per_step`.

    With `stop_at`, training stops at the first evaluation >= `stop_at`.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate(lr, warmup), weight_decay=TRAIN["weight_decay"]
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    history = []
    t0 = time.time()

    class Monitor(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * eval_every
            acc = evaluate(self.model)
            history.append((step, round(acc, 4), round(logs["loss"], 4)))
            log(
                f"  step {step:5d} loss {logs['loss']:.4f} acc {acc:.3f}"
                f" ({time.time() - t0:.0f}s)"
            )
            if stop_at is not None and acc >= stop_at:
                self.model.stop_training = True

    model.fit(
        batches,
        steps_per_epoch=eval_every,
        epochs=max(1, steps // eval_every),
        callbacks=[Monitor()],
        shuffle=False,  # a generator: its batches are already random
        verbose=0,
    )
    seconds = round(time.time() - t0, 1)
    return dict(
        history=history,
        final_accuracy=history[-1][1],
        best_accuracy=max(h[1] for h in history),
        steps_run=history[-1][0],
        seconds=seconds,
        seconds_per_step=round(seconds / history[-1][0], 4),
    )


def query_accuracy(model, inputs, positions, targets, batch_size=256):
    return accuracy(
        model.predict_on_batch,
        {"token_ids": inputs, "query_positions": positions},
        targets,
        batch_size,
    )


def train_mqar(
    model_name,
    seq_len,
    num_pairs,
    width,
    vocab_size,
    lr,
    steps,
    seed=0,
    batch_size=64,
    eval_every=100,
    warmup=0,
    final_norm=False,
    num_layers=2,
    test_size=512,
    log=print,
    stop_at=None,
    chunk_size=None,
    steps_per_execution=1,
    **mega_overrides,
):
    import keras

    keras.utils.set_random_seed(seed)
    model, info = build_mqar_model(
        model_name,
        seq_len,
        num_pairs,
        width,
        vocab_size,
        num_layers=num_layers,
        final_norm=final_norm,
        chunk_size=chunk_size,
        **mega_overrides,
    )
    test = query_view(
        *make_mqar(
            np.random.default_rng(10_000 + seed),
            test_size,
            seq_len,
            num_pairs,
            vocab_size,
        )
    )
    rng = np.random.default_rng(seed + 1)

    def batches():
        # Fresh data every step, drawn one evaluation interval at a time
        # (one vectorized call instead of one per batch).
        while True:
            ids, pos, tgt = query_view(
                *make_mqar(
                    rng, eval_every * batch_size, seq_len, num_pairs, vocab_size
                )
            )
            for s in range(0, len(ids), batch_size):
                yield (
                    {
                        "token_ids": ids[s : s + batch_size],
                        "query_positions": pos[s : s + batch_size],
                    },
                    tgt[s : s + batch_size],
                )

    curve = fit_with_curve(
        model,
        batches(),
        lambda m: query_accuracy(m, *test),
        steps,
        eval_every,
        lr,
        warmup=warmup,
        log=log,
        stop_at=stop_at,
        steps_per_execution=steps_per_execution,
    )
    return dict(info, **curve)


# === CLI ===


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CI cell: L=32, 4 pairs, vocab 128, width 64, "
        "mega-full, lr 3e-3, 600 steps",
    )
    parser.add_argument("--sizes", type=int, nargs="+", choices=sorted(SIZES))
    parser.add_argument("--widths", type=int, nargs="+", default=[64])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--models", nargs="+", choices=MODELS)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--final-norm", action="store_true")
    parser.add_argument(
        "--chunk-size",
        type=int,
        help="chunk of the chunked models (default L/4)",
    )
    parser.add_argument(
        "--stop-at",
        type=float,
        help="stop a run at the first evaluation with query accuracy >= "
        "this (steps_run records where)",
    )
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument(
        "--initializer-range",
        type=float,
        help="Mega's initializer_range (default 0.02, HF's)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tag", default="", help="free label for a row")
    add_result_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [32]
        args.models = args.models or ["mega-full"]
        args.vocab = 128
        args.lrs = [3e-3]
        args.steps = 600
        args.eval_every = 50
    args.sizes = args.sizes or list(DEFAULT_SIZES)
    args.models = args.models or list(MODELS)
    return args


def add_result_arguments(parser):
    """`--out`, `--resume` (read by `run_jobs`) and `--table`."""
    parser.add_argument("--out", help="JSONL file to append results to")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--table", metavar="JSONL")


def run_key(row):
    return (
        row["model"],
        row["L"],
        row["width"],
        row["lr"],
        row["vocab"],
        row["final_norm"],
        row["warmup"],
        row["steps"],
        row["seed"],
        row.get("initializer_range"),
        row["layers"],
        row["batch_size"],
        row.get("chunk"),
    )


def plan(args):
    for seq_len in args.sizes:
        for width in args.widths:
            for model in args.models:
                for lr in args.lrs:
                    for seed in args.seeds:
                        yield dict(
                            model=model,
                            L=seq_len,
                            pairs=SIZES[seq_len],
                            width=width,
                            lr=lr,
                            vocab=args.vocab,
                            final_norm=args.final_norm,
                            warmup=args.warmup,
                            steps=args.steps,
                            seed=seed,
                            initializer_range=args.initializer_range,
                            layers=args.layers,
                            batch_size=args.batch_size,
                            # None: the default L/4 (the grid's cells).
                            chunk=args.chunk_size
                            if model.startswith("mega-chunk")
                            and args.chunk_size != seq_len // 4
                            else None,
                            stop_at=args.stop_at,
                        )


def run(job, args):
    overrides = {}
    if job["initializer_range"] is not None:
        overrides["initializer_range"] = job["initializer_range"]
    print(f"== {json.dumps(job)}", flush=True)
    result = train_mqar(
        job["model"],
        job["L"],
        job["pairs"],
        job["width"],
        job["vocab"],
        job["lr"],
        job["steps"],
        seed=job["seed"],
        batch_size=job["batch_size"],
        eval_every=args.eval_every,
        warmup=job["warmup"],
        final_norm=job["final_norm"],
        num_layers=job["layers"],
        log=lambda line: print(line, flush=True),
        stop_at=job["stop_at"],
        chunk_size=job["chunk"],
        steps_per_execution=args.steps_per_execution,
        **overrides,
    )
    import keras

    return dict(job, **result, tag=args.tag, backend=keras.backend.backend())


def _curve(history):
    """`acc@step` at every evaluation, in percent (0.1 resolution below 1)."""
    return " ".join(
        (f"{acc:.1%}" if acc < 0.01 else f"{acc:.0%}") + f"@{step}"
        for step, acc, _ in history
    )


def _steps(row):
    """The step budget, and where an early stop ended the run."""
    run = row.get("steps_run", row["steps"])
    return f"{row['steps']}" + (f" (stop {run})" if run < row["steps"] else "")


def _variant(row):
    parts = [f"V={row['vocab']}"]
    if row["final_norm"]:
        parts.append("final norm")
    if row["warmup"]:
        parts.append(f"warmup {row['warmup']}")
    if row.get("initializer_range") is not None:
        parts.append(f"init range {row['initializer_range']}")
    if row["layers"] != 2:
        parts.append(f"{row['layers']} layers")
    if row.get("chunk"):
        parts.append(f"chunk {row['chunk']}")
    return ", ".join(parts)


def _pct(acc):
    return f"{acc:.2%}" if acc < 0.01 else f"{acc:.1%}"


def format_grid(rows, sizes=DEFAULT_SIZES, widths=(64, 128), lrs=(1e-3, 3e-3)):
    """The issue's grid (vocabulary 8192, default chunk L/4, no variant):
    one row per (L, width), one column per model, each lr's final query
    accuracy ("-" where not run)."""
    cells = {}
    for row in rows:
        if _variant(row) != "V=8192" or row["steps"] != 1000:
            continue
        cells[(row["L"], row["width"], row["model"], row["lr"])] = row
    lines = [
        "| L / pairs | width | " + " | ".join(MODELS) + " |",
        "|---|---|" + "---|" * len(MODELS),
    ]
    for seq_len in sizes:
        for width in widths:
            out = []
            for model in MODELS:
                parts = []
                for lr in lrs:
                    r = cells.get((seq_len, width, model, lr))
                    acc = "-" if r is None else _pct(r["final_accuracy"])
                    if r is not None and r["steps_run"] < r["steps"]:
                        acc += f" (stop {r['steps_run']})"
                    parts.append(f"{lr:.0e}".replace("e-0", "e-") + f": {acc}")
                out.append("<br>".join(parts))
            lines.append(
                f"| {seq_len} / {SIZES[seq_len]} | {width} | "
                + " | ".join(out)
                + " |"
            )
    return "\n".join(lines)


def format_table(rows):
    """Two markdown tables: best lr per (variant, L, width, model), and
    every run's learning curve."""
    latest = {}
    for row in rows:
        latest[run_key(row)] = row
    rows = list(latest.values())
    order = {m: i for i, m in enumerate(MODELS)}
    groups = {}
    for row in rows:
        key = (
            _variant(row),
            row["steps"],
            row["L"],
            row["width"],
            order[row["model"]],
            row["model"],
        )
        groups.setdefault(key, []).append(row)
    lines = [
        (
            "| variant | steps | L / pairs | width | model | best lr | "
            "final acc | best acc | params (no emb/head) | s/step |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        runs = groups[key]
        best = max(runs, key=lambda r: (r["final_accuracy"], -r["lr"]))
        tried = "/".join(
            f"{r['lr']:g}" for r in sorted(runs, key=lambda r: r["lr"])
        )
        seeds = sorted({r["seed"] for r in runs})
        lines.append(
            f"| {key[0]} | {_steps(best)} | {key[2]} / {best['pairs']} |"
            f" {key[3]} |"
            f" {key[5]} | {best['lr']:g} (of {tried}"
            + (f"; seeds {seeds}" if len(seeds) > 1 else "")
            + f") | **{best['final_accuracy']:.1%}** |"
            f" {best['best_accuracy']:.1%} |"
            f" {best['params_without_embeddings_and_head']:,} |"
            f" {best['seconds_per_step']:.2f} |"
        )
    lines += [
        "",
        (
            "Learning curves (test query accuracy at every evaluation, "
            "accuracy@step):"
        ),
        "",
        "| variant | L | width | model | lr | seed | curve |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        for r in sorted(groups[key], key=lambda r: (r["lr"], r["seed"])):
            lines.append(
                f"| {key[0]} | {r['L']} | {r['width']} | {r['model']} |"
                f" {r['lr']:g} | {r['seed']} | {_curve(r['history'])} |"
            )
    return "\n".join(lines)


def run_jobs(jobs, run, run_key, format_table, args, describe):
    """Runs each job (`run(job) -> row`) not already in `args.out` (with
    `args.resume`; `describe.format(**job)` names a skipped one), printing
    each row and appending it to `args.out`, then prints `format_table` of
    the new rows; returns 0."""
    done = {run_key(r) for r in read_jsonl(args.out)} if args.resume else set()
    rows = []
    for job in jobs:
        if run_key(job) in done:
            print(f"== skipping {describe.format(**job)} (done)")
            continue
        row = run(job)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    if rows:
        print()
        print(format_table(rows))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        rows = read_jsonl(args.table)
        print(format_grid(rows))
        print()
        print(format_table(rows))
        return 0
    run_one = functools.partial(run, args=args)
    return run_jobs(
        plan(args), run_one, run_key, format_table, args, "{model} L={L}"
    )


if __name__ == "__main__":
    sys.exit(main())
