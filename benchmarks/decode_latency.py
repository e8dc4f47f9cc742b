"""Per-token decoding latency against position: keras-mega vs HF Mega.

    KERAS_BACKEND=jax python benchmarks/decode_latency.py
        [--positions 512,2048,8192] [--tokens 32] [--batch8-position 2048]
        [--hf-max-tokens 8] [--no-hf] [--quick] [--out FILE.jsonl]

A causal Mega LM (4 layers, hidden 128, intermediate 256, shared 64, EMA
16), chunked (chunk 128) and unchunked, next to HF's cached decoding
(unchunked: HF's cached decoding crashes with chunking).

What is timed is the decode steps themselves, with the prefill apart: the
prompt of `position` tokens is prefilled (compiled, then timed on its own
and reported as `prefill_s`), then the single-step
`MegaCausalLM.call_with_cache` (compiled: `jax.jit` with the cache donated
on JAX, `tf.function(jit_compile=True)` on TensorFlow, eager under
`torch.no_grad` on torch) decodes greedily, one token per call, feeding
its argmax back. Two steps warm up (compile), then each of `--tokens`
steps is timed on its own, blocking on its result; the median step is the
per-token latency (the mean is reported too). HF's steps are timed the same
way after its own prefill, capped at `--hf-max-tokens` (its steps grow with
the position: about half a second at 8K).

Batch 1 at every position, plus a batch-8 row at `--batch8-position`.
Every row records `os.getloadavg()` (and torch's thread count): on a shared machine compare the ratios
within one run. Prints a table and writes JSON lines.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import compare_hf  # benchmarks/, the script's directory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# compare_hf.py's LRA-Text sizes as a causal LM (HF `MegaConfig` names).
CONFIG = compare_hf.DECODER
WARMUP = 2


def prompt_ids(batch, position):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(3, CONFIG["vocab_size"], (batch, position)).astype(
        "int32"
    )


def compiled(model, fn, donate=()):
    """`fn(*args)` (which reads `model`'s weights), compiled where the
    backend compiles; `donate`: the arguments JAX may reuse in place."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        variables = model.trainable_variables + model.non_trainable_variables

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=zip(variables, values)):
                return fn(*args)

        jitted = jax.jit(stateless, donate_argnums=tuple(1 + i for i in donate))
        values = [v.value for v in variables]
        return lambda *args: jitted(values, *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    def eager(*args):
        with torch.no_grad():
            return fn(*args)

    return eager


def block(x):
    """Waits for `x` (and every array in it) to be computed: JAX dispatches
    asynchronously; TensorFlow's and torch's CPU calls return when done."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready(x)


def step_function(model):
    """`step(token [B, 1], cache, index) -> (next_token [B, 1], cache)`
    (greedy: the argmax of the logits) and `prefill(ids, mask) -> cache`,
    both compiled where the backend compiles."""
    import keras

    def decode(token, cache, index):
        logits, _, cache = model.call_with_cache(token, cache, index)
        next_token = keras.ops.argmax(logits[:, -1, :], axis=-1)
        return keras.ops.cast(next_token, "int32")[:, None], cache

    def prefill(ids, mask):
        # As `generate()`: the cache is the state before position - 1,
        # whose token is fed first.
        return model._build_cache(ids, mask)[1]

    return compiled(model, decode, donate=(1,)), compiled(model, prefill)


def keras_latency(functions, batch, position, tokens):
    import keras
    import numpy as np

    step, prefill = functions
    max_length = position + WARMUP + tokens + 1
    ids = np.ones((batch, max_length), "int32")
    ids[:, :position] = prompt_ids(batch, position)
    mask = np.zeros((batch, max_length), "int32")
    mask[:, :position] = 1
    ids, mask = (
        keras.ops.convert_to_tensor(ids),
        keras.ops.convert_to_tensor(mask),
    )
    block(prefill(ids, mask))  # compiles
    start = time.perf_counter()
    cache = prefill(ids, mask)
    block(cache)
    prefill_s = time.perf_counter() - start
    token = ids[:, position - 1 : position]
    index = position - 1
    times = []
    for i in range(WARMUP + tokens):
        start = time.perf_counter()
        token, cache = step(
            token, cache, keras.ops.convert_to_tensor(index, "int32")
        )
        block(token)
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
        index += 1
    return dict(
        ms=1000 * statistics.median(times),
        mean_ms=1000 * statistics.mean(times),
        steps=len(times),
        prefill_s=prefill_s,
    )


def hf_latency(model, batch, position, tokens):
    import torch

    ids = torch.tensor(prompt_ids(batch, position)).long()
    times = []
    with torch.no_grad():
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        prefill_s = time.perf_counter() - start
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for i in range(WARMUP + tokens):
            start = time.perf_counter()
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
    return dict(
        ms=1000 * statistics.median(times),
        mean_ms=1000 * statistics.mean(times),
        steps=len(times),
        prefill_s=prefill_s,
    )


def build_models():
    import torch
    import transformers

    import keras_mega

    torch.manual_seed(0)
    hf = transformers.MegaForCausalLM(transformers.MegaConfig(**CONFIG)).eval()
    models = {}
    for name, chunk in (("chunk 128", 128), ("full", None)):
        config = dict(CONFIG, use_chunking=bool(chunk), chunk_size=chunk or -1)
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            transformers.MegaForCausalLM(
                transformers.MegaConfig(**config)
            ).save_pretrained(tmp)
            models[name] = keras_mega.models.MegaCausalLM.from_preset(
                tmp, preprocessor=None
            )
    return models, hf


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", default="512,2048,8192")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch8-position", type=int, default=2048)
    parser.add_argument("--hf-max-tokens", type=int, default=8)
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads for HF (and Keras on torch): on a shared "
        "machine torch's default threads can slow it several-fold",
    )
    parser.add_argument(
        "--quick", action="store_true", help="16 tokens, HF capped at 4"
    )
    parser.add_argument("--out", default="benchmarks/decode_latency.jsonl")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.hf_max_tokens = 16, 4

    import keras
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    backend = keras.backend.backend()
    models, hf = build_models()
    functions = {name: step_function(m) for name, m in models.items()}
    cases = [(1, int(p)) for p in args.positions.split(",")]
    if args.batch8_position:
        cases.append((8, args.batch8_position))
    rows = []
    for batch, position in cases:
        row = {"backend": backend, "batch": batch, "position": position}
        for name, fns in functions.items():
            result = keras_latency(fns, batch, position, args.tokens)
            row.update({f"keras_{name}_{k}": v for k, v in result.items()})
        if not args.no_hf:
            result = hf_latency(hf, batch, position, args.hf_max_tokens)
            row.update({f"hf_full_{k}": v for k, v in result.items()})
        row["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        row["torch_threads"] = torch.get_num_threads()
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print_table(rows, backend)


def print_table(rows, backend):
    def ms(row, key):
        value = row.get(f"{key}_ms")
        return "-" if value is None else f"{value:.2f}"

    def ratio(row, a, b):
        x, y = row.get(f"{a}_ms"), row.get(f"{b}_ms")
        return "-" if x is None or y is None else f"{y / x:,.0f}x"

    print(f"\nms per decoded token (median step, prefill apart), {backend}")
    print(
        "| batch | position | keras-mega chunk 128 | keras-mega full | "
        "HF full (cached) | HF / chunked | load avg |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        chunk, hf = "keras_chunk 128", "hf_full"
        print(
            f"| {r['batch']} | {r['position']} | {ms(r, chunk)} | "
            f"{ms(r, 'keras_full')} | {ms(r, hf)} | {ratio(r, chunk, hf)} | "
            f"{' '.join(f'{x:.1f}' for x in r['loadavg'])} |"
        )
    ones = [r for r in rows if r["batch"] == 1]
    if len(ones) >= 2:
        first, last = ones[0], ones[-1]
        growth = last["position"] / first["position"]
        for key in ("keras_chunk 128", "keras_full", "hf_full"):
            if f"{key}_ms" in first and f"{key}_ms" in last:
                print(
                    f"{key}: {last[f'{key}_ms'] / first[f'{key}_ms']:.2f}x "
                    f"from position {first['position']} to "
                    f"{last['position']} ({growth:.0f}x longer)"
                )


if __name__ == "__main__":
    main()
