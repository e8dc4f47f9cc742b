"""LRA ListOps, scaled for a 2-core CPU: Mega against a Transformer.

Task (Tay et al., "Long Range Arena", 2021; written here from the published
definition): prefix expressions over the digits 0-9 with the operators MIN,
MAX, MED (median, `int()` of the mean of the two middle values for an even
count) and SM (sum modulo 10), nested to depth <= `--max-depth` (10) with
2 .. `--max-args` (10) arguments per operator; the label is the value of
the expression (10 classes). Trees are drawn as LRA draws them (below the
maximum depth a node is an operator with probability 0.25, else a digit;
here the root is always an operator, which is the same distribution once
one-token trees are rejected) and kept when `min_len < tokens < max_len`;
duplicates are dropped. Tokens: the 4 operators, `]`, the 10 digits (LRA's
parentheses are dropped, as its input pipeline does); padded to `max_len`
with Mega's pad id 1.

Scale (default, `--min-len 32 --max-len 128`, 10,000 train / 1,000 test
examples; LRA: 500-2000 tokens, 96K train): chosen for machine time, see
RESULTS_listops.md. The data is cached in `--cache-dir` by its parameters.

Models (`--models`), equal width, depth and parameter count:
  mega          MegaBackbone, bidirectional EMA, non-causal, LayerNorm
                pre-norm, softmax, rotary bias, full attention
  mega-chunk    the same with chunk_size = max_len / 4
  transformer   keras-hub TokenAndPositionEmbedding + TransformerEncoder
                (post-norm, 4 heads), FFN width matched to Mega's count
All: mean pooling over the real tokens, Dense(10). Mega sizes as in the
MQAR benchmark (hidden W, intermediate 2W, shared W/2, EMA 16, FFN 2W),
2 layers, dropout 0, AdamW lr `--lr` (3e-3; weight decay 0.01), batch 32,
`model.fit` on shuffled epochs of the train set; test accuracy every
`--eval-every` steps (the learning curve) and at the end.

Usage:
    KERAS_BACKEND=jax python benchmarks/listops.py --quick
    KERAS_BACKEND=jax python benchmarks/listops.py --seeds 0 1 2 \
        --out benchmarks/listops.jsonl --resume
    python benchmarks/listops.py --table benchmarks/listops.jsonl
"""

import argparse
import json
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mqar
from recall_ladder import read_jsonl
from recall_task import accuracy
from recall_task import mega_options

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
PAD_ID = 1  # MegaBackbone's default pad_token_id (0 bos, 2 eos unused)
VOCAB = (
    ["<bos>", "<pad>", "<eos>"]
    + [str(d) for d in range(10)]
    + list(OPERATORS)
    + [END]
)
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
NUM_CLASSES = 10
VALUE_P = 0.25  # LRA: probability that a node below max depth is an operator
MODELS = ("mega", "mega-chunk", "transformer")


# === Data ===


def _apply(op, args):
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    s = sorted(args)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else int((s[mid - 1] + s[mid]) / 2)


class _TooLong(Exception):
    pass


def _tree(r, depth, max_depth, max_args, budget, force_op=False):
    """`(tokens, value)` of a random ListOps tree.

    `budget[0]` counts the tokens still allowed; a tree that would exceed
    it raises `_TooLong` (it would be rejected anyway: stopping early only
    saves time, the accepted trees keep LRA's distribution).
    """
    if force_op or (depth < max_depth and r.random() <= VALUE_P):
        op = r.choice(OPERATORS)
        budget[0] -= 2  # the operator and its END
        if budget[0] < 0:
            raise _TooLong
        tokens, args = [op], []
        for _ in range(r.randint(2, max_args)):
            sub, value = _tree(r, depth + 1, max_depth, max_args, budget)
            tokens += sub
            args.append(value)
        tokens.append(END)
        return tokens, _apply(op, args)
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLong
    value = r.randrange(10)
    return [str(value)], value


def evaluate_tokens(tokens):
    """Value of a token list (an independent check of the generator)."""
    stack = []
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            op, *args = stack.pop()
            value = _apply(op, args)
            if not stack:
                return value
            stack[-1].append(value)
        else:
            stack[-1].append(int(tok))
    raise ValueError("unbalanced expression")


def generate(
    num_examples, min_len, max_len, seed, max_depth=10, max_args=10, exclude=()
):
    """Unique expressions with `min_len < len(tokens) < max_len`."""
    r = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < num_examples:
        try:
            tokens, value = _tree(
                r, 1, max_depth, max_args, [max_len - 1], force_op=True
            )
        except _TooLong:
            continue
        if not min_len < len(tokens) < max_len:
            continue
        key = " ".join(tokens)
        if key in seen:
            continue
        seen.add(key)
        out.append((key, value))
    return out


def encode(examples, max_len):
    ids = np.full((len(examples), max_len), PAD_ID, dtype="int32")
    labels = np.zeros(len(examples), dtype="int32")
    for i, (text, value) in enumerate(examples):
        toks = [TOKEN_ID[t] for t in text.split()]
        ids[i, : len(toks)] = toks
        labels[i] = value
    return ids, labels


def load_data(
    num_train,
    num_test,
    min_len,
    max_len,
    max_depth=10,
    max_args=10,
    seed=0,
    cache_dir=None,
):
    """`((train_ids, train_labels), (test_ids, test_labels))`, cached."""
    name = (
        f"listops_{num_train}_{num_test}_{min_len}_{max_len}_{max_depth}_"
        f"{max_args}_{seed}.npz"
    )
    path = os.path.join(cache_dir, name) if cache_dir else None
    if path and os.path.exists(path):
        data = np.load(path)
        return (data["xtr"], data["ytr"]), (data["xte"], data["yte"])
    test = generate(num_test, min_len, max_len, seed + 1, max_depth, max_args)
    train = generate(
        num_train,
        min_len,
        max_len,
        seed,
        max_depth,
        max_args,
        exclude={t for t, _ in test},
    )
    (xtr, ytr), (xte, yte) = encode(train, max_len), encode(test, max_len)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    return (xtr, ytr), (xte, yte)


def majority_accuracy(train_labels, test_labels):
    """Test accuracy of always predicting the train set's commonest label."""
    return float(np.mean(test_labels == np.bincount(train_labels).argmax()))


# === Models ===


def build_listops_model(
    model_name, max_len, width, num_layers=2, **mega_overrides
):
    """`(keras.Model, info)`: `token_ids`, `padding_mask` -> logits [B, 10]."""
    import keras
    import keras_hub

    from keras_mega.models import MegaBackbone

    token_ids = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    mask = keras.Input(shape=(max_len,), dtype="int32", name="padding_mask")
    options = mega_options(
        width,
        num_layers,
        len(VOCAB),
        max_len,
        bidirectional=True,
        causal=False,
        **mega_overrides,
    )
    info = {}
    if model_name == "transformer":
        probe = MegaBackbone(**options)
        target = mqar.mega_block_params(probe)
        ffn = mqar.transformer_ffn_dim(target, width, num_layers, max_len)
        x = keras_hub.layers.TokenAndPositionEmbedding(
            len(VOCAB), max_len, width, tie_weights=True, name="embedding"
        )(token_ids)
        x = mqar.transformer_stack(
            x, width, num_layers, ffn, mask, causal=False
        )
        info.update(mega_block_params=target, transformer_ffn_dim=ffn)
    else:
        chunk = max_len // 4 if model_name == "mega-chunk" else None
        backbone = MegaBackbone(**dict(options, chunk_size=chunk))
        x = backbone({"token_ids": token_ids, "padding_mask": mask})
        info.update(
            chunk_size=chunk, mega_block_params=mqar.mega_block_params(backbone)
        )
    # Mean pooling over the real tokens.
    weights = keras.ops.cast(mask, x.dtype)[:, :, None]
    pooled = keras.ops.sum(x * weights, axis=1) / keras.ops.maximum(
        keras.ops.sum(weights, axis=1), 1.0
    )
    logits = keras.layers.Dense(NUM_CLASSES, name="head")(pooled)
    model = keras.Model({"token_ids": token_ids, "padding_mask": mask}, logits)
    embed_and_head = len(VOCAB) * width + width * NUM_CLASSES + NUM_CLASSES
    info["params"] = model.count_params()
    info["params_without_embeddings_and_head"] = (
        model.count_params() - embed_and_head
    )
    return model, info


def test_accuracy(model, ids, labels, batch_size=250):
    inputs = {"token_ids": ids, "padding_mask": (ids != PAD_ID).astype("int32")}
    return accuracy(model.predict_on_batch, inputs, labels, batch_size)


def train_listops(
    model_name,
    data,
    width=64,
    lr=1e-3,
    steps=600,
    seed=0,
    batch_size=32,
    eval_every=100,
    warmup=0,
    num_layers=2,
    log=print,
    **mega_overrides,
):
    import keras

    (xtr, ytr), (xte, yte) = data
    keras.utils.set_random_seed(seed)
    model, info = build_listops_model(
        model_name, xtr.shape[1], width, num_layers, **mega_overrides
    )
    rng = np.random.default_rng(seed + 1)

    def batches():
        while True:
            order = rng.permutation(len(xtr))
            for s in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[s : s + batch_size]
                ids = xtr[idx]
                yield (
                    {
                        "token_ids": ids,
                        "padding_mask": (ids != PAD_ID).astype("int32"),
                    },
                    ytr[idx],
                )

    curve = mqar.fit_with_curve(
        model,
        batches(),
        lambda m: test_accuracy(m, xte, yte),
        steps,
        eval_every,
        lr,
        warmup=warmup,
        log=log,
    )
    return dict(info, **curve, majority_accuracy=majority_accuracy(ytr, yte))


# === CLI ===


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CI run: mega only, seed 0, 2,000 train / 500 test "
        "examples of 16-64 tokens, 200 steps",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--min-len", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--max-args", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--test-size", type=int, default=1_000)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "keras_mega"),
    )
    mqar.add_result_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.models = args.models or ["mega"]
        args.seeds = [0]
        args.train_size, args.test_size = 2_000, 500
        args.min_len, args.max_len = 16, 64
        args.steps, args.eval_every = 200, 50
    args.models = args.models or list(MODELS)
    return args


# The data's and the training's parameters (`args` attributes, row keys).
SCALE = (
    "min_len",
    "max_len",
    "max_depth",
    "max_args",
    "train_size",
    "test_size",
    "data_seed",
)
TRAINING = ("width", "layers", "lr", "warmup", "steps", "batch_size")


def scale_of(args):
    return {name: getattr(args, name) for name in SCALE}


def run_key(row):
    return tuple(row[name] for name in ("model", "seed", *TRAINING, *SCALE))


def format_table(rows):
    """Markdown: one row per (scale, model), one column per seed, then the
    curves."""
    latest = {run_key(r): r for r in rows}
    groups = {}
    order = {m: i for i, m in enumerate(MODELS)}
    for r in latest.values():
        scale = (
            f"{r['min_len']}<len<{r['max_len']}, {r['train_size']} train, "
            f"{r['steps']} steps, W={r['width']}, lr {r['lr']:g}"
        )
        groups.setdefault((scale, order[r["model"]], r["model"]), []).append(r)
    seeds = sorted({r["seed"] for r in latest.values()})
    lines = [
        "| scale | model | params (no emb/head) | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | majority class | s/step |",
        "|---|---|---|" + "---|" * len(seeds) + "---|---|---|",
    ]
    for key in sorted(groups):
        by_seed = {r["seed"]: r for r in groups[key]}
        accs = [by_seed[s]["final_accuracy"] for s in seeds if s in by_seed]
        first = groups[key][0]
        lines.append(
            f"| {key[0]} | {key[2]} |"
            f" {first['params_without_embeddings_and_head']:,} | "
            + " | ".join(
                f"{by_seed[s]['final_accuracy']:.1%}" if s in by_seed else "-"
                for s in seeds
            )
            + f" | **{np.mean(accs):.1%}** | {first['majority_accuracy']:.1%}"
            f" | {np.mean([r['seconds_per_step'] for r in groups[key]]):.2f} |"
        )
    lines += [
        "",
        "Learning curves (test accuracy, step: accuracy):",
        "",
        "| scale | model | seed | curve |",
        "|---|---|---|---|",
    ]
    for key in sorted(groups):
        for r in sorted(groups[key], key=lambda r: r["seed"]):
            curve = " ".join(f"{a:.0%}@{s}" for s, a, _ in r["history"])
            lines.append(f"| {key[0]} | {key[2]} | {r['seed']} | {curve} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print(format_table(read_jsonl(args.table)))
        return 0
    import keras

    scale = scale_of(args)
    data = load_data(
        args.train_size,
        args.test_size,
        args.min_len,
        args.max_len,
        args.max_depth,
        args.max_args,
        args.data_seed,
        args.cache_dir,
    )
    print(
        f"== data: {scale}; majority class {majority_accuracy(data[0][1], data[1][1]):.1%};"
        f" mean length {np.mean((data[0][0] != PAD_ID).sum(1)):.0f}",
        flush=True,
    )
    training = {name: getattr(args, name) for name in TRAINING}
    jobs = (
        dict(scale, model=model, seed=seed, **training)
        for seed in args.seeds
        for model in args.models
    )

    def run(job):
        print(f"== {json.dumps(job)}", flush=True)
        result = train_listops(
            job["model"],
            data,
            width=args.width,
            lr=args.lr,
            steps=args.steps,
            seed=job["seed"],
            batch_size=args.batch_size,
            eval_every=args.eval_every,
            warmup=args.warmup,
            num_layers=args.layers,
            log=lambda line: print(line, flush=True),
        )
        return dict(job, **result, backend=keras.backend.backend())

    describe = "{model} seed {seed}"
    return mqar.run_jobs(jobs, run, run_key, format_table, args, describe)


if __name__ == "__main__":
    sys.exit(main())
