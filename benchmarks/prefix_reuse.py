"""Answering many continuations of one long prefix, with and without reuse.

    KERAS_BACKEND=jax python benchmarks/prefix_reuse.py [--quick]
        [--prefix 16384] [--continuations 16] [--prompt 16] [--new 16]
        [--out FILE.jsonl]

A chunked causal Mega LM (4 layers, hidden 128, intermediate 256, shared
64, EMA 16, chunk 128; random weights) answers `--continuations` prompts of
`--prompt` tokens that all follow the same `--prefix`-token document,
generating `--new` tokens each (greedy), as one batch:

- without reuse: `generate()` on prefix + prompt for every row (the prefix
  is read once per continuation);
- with reuse: `state = prefill_state(prefix)` once (batch 1), then
  `generate(prompts, prefix_state=state.repeat(n))`.

Both are run twice: the first call includes compiling, the second is the
time reported (`warm_s`). The generated tokens of both are checked to be
identical. Prints a table with the ratio and writes JSON lines.
`--quick`: a 1024-token prefix, 4 continuations, 8 + 8 tokens.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import compare_hf  # noqa: E402  (benchmarks/, the script's directory)

# compare_hf.py's LRA-Text sizes as a causal LM, chunked.
CONFIG = compare_hf.keras_config(
    compare_hf.DECODER, chunk_size=128, max_sequence_length=2048
)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prefix", type=int, default=16384)
    parser.add_argument("--continuations", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--new", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.prefix, args.continuations, args.prompt, args.new = 1024, 4, 8, 8

    import keras
    import numpy as np

    from keras_mega.models import MegaBackbone
    from keras_mega.models import MegaCausalLM

    keras.utils.set_random_seed(0)
    model = MegaCausalLM(MegaBackbone(**CONFIG))
    model.compile(sampler="greedy")
    rng = np.random.default_rng(0)
    n, p, q = args.continuations, args.prefix, args.prompt
    length = q + args.new
    prefix = rng.integers(3, 1000, (1, p)).astype("int32")
    prompts = np.ones((n, length), "int32")
    prompts[:, :q] = rng.integers(3, 1000, (n, q))
    mask = np.zeros((n, length), bool)
    mask[:, :q] = True

    def without_reuse():
        ids = np.concatenate([np.repeat(prefix, n, 0), prompts], 1)
        full_mask = np.concatenate([np.ones((n, p), bool), mask], 1)
        out = model.generate(
            {"token_ids": ids, "padding_mask": full_mask}, stop_token_ids=None
        )
        return np.asarray(out["token_ids"])[:, p:]

    def with_reuse():
        state = model.prefill_state(prefix).repeat(n)
        out = model.generate(
            {"token_ids": prompts, "padding_mask": mask},
            stop_token_ids=None,
            prefix_state=state,
        )
        return np.asarray(out["token_ids"])

    rows = []
    results = {}
    for name, fn in (
        ("without reuse", without_reuse),
        ("with reuse", with_reuse),
    ):
        _, first = timed(fn)
        out, warm = timed(fn)
        results[name] = out
        rows.append({"case": name, "first_call_s": first, "warm_s": warm})
    identical = bool(
        np.array_equal(results["without reuse"], results["with reuse"])
    )
    state = model.prefill_state(prefix)
    ratio = rows[0]["warm_s"] / rows[1]["warm_s"]
    common = {
        "backend": keras.config.backend(),
        "prefix_tokens": p,
        "continuations": n,
        "prompt_tokens": q,
        "new_tokens": args.new,
        "state_bytes_per_row": state.nbytes,
        "identical_tokens": identical,
        "speedup": ratio,
        "loadavg": os.getloadavg(),
    }
    for row in rows:
        row.update(common)

    print(
        f"\n{n} continuations ({q} prompt + {args.new} new tokens) of a "
        f"{p}-token prefix, backend {common['backend']}, chunk 128, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print("| | first call (compile) s | warm s |")
    print("|---|---|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['first_call_s']:.2f} | "
            f"{row['warm_s']:.2f} |"
        )
    print(
        f"| ratio | | {ratio:.1f}x |\n"
        f"identical tokens: {identical}; state: {state.nbytes} bytes per "
        f"row, independent of the prefix length"
    )
    if not identical:
        raise SystemExit("the two ways generated different tokens")
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
