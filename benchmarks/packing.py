"""Useful tokens per second: packed documents against padding.

Document lengths are drawn log-uniform from `--min-length` to
`--row-length` (a skewed distribution: most documents are short, a few
long). Padding puts each document in its own row of `--row-length` tokens;
packing (`pack_documents`, what `MegaCausalLMPreprocessor(packing=True)`
does) lays them end to end and cuts rows, a `MegaBackbone(
document_packing=True)` keeping the documents apart. Both train the same
causal LM (same weights, same batch size) for one pass over the same
documents; a useful token is a real (not padding) token. The table gives
both rates and their ratio, measured in one run.

    KERAS_BACKEND=jax python benchmarks/packing.py            # rows of 4096
    KERAS_BACKEND=jax python benchmarks/packing.py --quick    # rows of 512

Each run appends one JSON line per scheme to `--output`
(benchmarks/packing.jsonl).
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_mega.models import MegaBackbone
from keras_mega.models import MegaCausalLM
from keras_mega.models.mega_document_packing import pack_documents

VOCABULARY = 512
PAD = 1


def log_uniform_lengths(count, low, high, seed):
    rng = np.random.default_rng(seed)
    return (
        np.exp(rng.uniform(np.log(low), np.log(high + 1), count))
        .astype(int)
        .clip(low, high)
    )


def documents(lengths, seed):
    rng = np.random.default_rng(seed + 1)
    return [list(rng.integers(5, VOCABULARY, n)) for n in lengths]


def padded_rows(docs, row_length):
    rows = len(docs)
    token_ids = np.full((rows, row_length), PAD, "int32")
    for i, doc in enumerate(docs):
        token_ids[i, : len(doc)] = doc
    padding_mask = np.arange(row_length)[None] < [[len(d)] for d in docs]
    y = np.roll(token_ids, -1, axis=1)
    weights = padding_mask.copy()
    weights[np.arange(rows), [len(d) - 1 for d in docs]] = False
    x = {"token_ids": token_ids, "padding_mask": padding_mask.astype("int32")}
    return x, y, weights.astype("float32")


def packed_rows(docs, row_length):
    packed = pack_documents(docs, row_length, PAD)
    x = {name: packed[name] for name in ("token_ids", "padding_mask")}
    x["document_ids"] = packed["document_ids"]
    return x, packed["next_ids"], packed["next_weights"].astype("float32")


def even_rows(x, y, w, batch_size):
    """Adds empty rows up to a multiple of the batch size (they count as
    wasted work), so that every step has one shape."""
    extra = (-len(y)) % batch_size
    if not extra:
        return x, y, w
    x = {
        name: np.concatenate(
            [
                v,
                np.full(
                    (extra,) + v.shape[1:],
                    PAD if name == "token_ids" else 0,
                    v.dtype,
                ),
            ]
        )
        for name, v in x.items()
    }
    y = np.concatenate([y, np.full((extra,) + y.shape[1:], PAD, y.dtype)])
    w = np.concatenate([w, np.zeros((extra,) + w.shape[1:], w.dtype)])
    return x, y, w


def model(document_packing, args):
    backbone = MegaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=args.layers,
        hidden_dim=args.hidden_dim,
        intermediate_dim=2 * args.hidden_dim,
        shared_dim=args.hidden_dim // 2,
        ema_dim=8,
        causal=True,
        bidirectional=False,
        chunk_size=args.chunk_size,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
        document_packing=document_packing,
    )
    lm = MegaCausalLM(backbone, use_hidden_dense=False)
    lm.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=None,
        weighted_metrics=None,
    )
    return lm


def runner(lm, x, y, w, batch_size):
    """A function timing one pass (after a warm-up step that compiles)."""
    x, y, w = even_rows(x, y, w, batch_size)

    def batch(i):
        s = slice(i, i + batch_size)
        return {k: v[s] for k, v in x.items()}, y[s], w[s]

    lm.train_on_batch(*batch(0))

    def one_pass():
        start = time.perf_counter()
        for i in range(0, len(y), batch_size):
            lm.train_on_batch(*batch(i))
        return time.perf_counter() - start

    return one_pass, len(y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--row-length", type=int, default=None)
    parser.add_argument("--min-length", type=int, default=16)
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="passes per scheme, alternating; the fastest counts",
    )
    parser.add_argument(
        "--output",
        default=os.path.join(os.path.dirname(__file__), "packing.jsonl"),
    )
    args = parser.parse_args()
    row = args.row_length or (512 if args.quick else 4096)
    count = args.documents or (32 if args.quick else 48)
    lengths = log_uniform_lengths(count, args.min_length, row, args.seed)
    docs = documents(lengths, args.seed)
    useful = int(lengths.sum())

    keras.utils.set_random_seed(args.seed)
    padding_lm = model(False, args)
    packing_lm = model(True, args)
    packing_lm.set_weights(padding_lm.get_weights())

    schemes = (
        ("padding", padding_lm, padded_rows(docs, row)),
        ("packing", packing_lm, packed_rows(docs, row)),
    )
    runners = [runner(lm, *rows, args.batch_size) for _, lm, rows in schemes]
    # Alternate the schemes, so that a busy machine slows both alike.
    times = [[] for _ in schemes]
    for _ in range(args.repeats):
        for i, (one_pass, _) in enumerate(runners):
            times[i].append(one_pass())
    results = []
    for (scheme, _, _), (_, n_rows), passes in zip(schemes, runners, times):
        seconds = min(passes)
        results.append(
            {
                "benchmark": "packing",
                "scheme": scheme,
                "backend": keras.backend.backend(),
                "row_length": row,
                "documents": count,
                "lengths": f"log-uniform {args.min_length}..{row}",
                "mean_length": round(float(lengths.mean()), 1),
                "rows": n_rows,
                "useful_tokens": useful,
                "computed_tokens": n_rows * row,
                "utilization": round(useful / (n_rows * row), 3),
                "seconds": round(seconds, 3),
                "useful_tokens_per_s": round(useful / seconds, 1),
                "model": f"{args.layers} layers, hidden {args.hidden_dim}, "
                f"chunk {args.chunk_size}, batch {args.batch_size}",
                "quick": args.quick,
                "passes_seconds": [round(t, 3) for t in passes],
            }
        )
    ratio = (
        results[1]["useful_tokens_per_s"] / results[0]["useful_tokens_per_s"]
    )
    for r in results:
        r["ratio_vs_padding"] = round(
            r["useful_tokens_per_s"] / results[0]["useful_tokens_per_s"], 2
        )

    print(
        f"{count} documents, lengths log-uniform {args.min_length}..{row} "
        f"(mean {lengths.mean():.0f}), rows of {row}, "
        f"{keras.backend.backend()}, {results[0]['model']}"
    )
    header = (
        "| scheme | rows | utilization | seconds | useful tokens/s | ratio |"
    )
    print(header)
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['scheme']} | {r['rows']} | {r['utilization']:.0%} | "
            f"{r['seconds']:.2f} | {r['useful_tokens_per_s']:,.0f} | "
            f"{r['ratio_vs_padding']:.2f}x |"
        )
    print(f"packing / padding: {ratio:.2f}x useful tokens per second")
    with open(args.output, "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
