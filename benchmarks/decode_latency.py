"""Per-token decoding latency against position: keras-mega vs HF Mega.

    python benchmarks/decode_latency.py [--positions 512,2048,8192]
        [--batch-sizes 1,8] [--tokens 32] [--hf-max-tokens 8]
        [--hf-max-position N] [--no-hf] [--backends jax,tensorflow,torch]
        [--torch-threads N] [--quick] [--out benchmarks/decode_latency.jsonl]

A causal Mega LM (`compare_hf.DECODER`: 4 layers, hidden 128, intermediate
256, shared 64, EMA 16, rotary bias), chunked (chunk 128) and unchunked,
next to HF's own cached decoding (`MegaForCausalLM`, `use_cache=True`,
`past_key_values`; unchunked only: HF's cached decoding crashes with
chunking) with the same weights.

What is timed is the decode steps themselves, with the prefill apart. For
each batch size and position P the prompt is prefilled once, the way
`generate()` does it (`MegaCausalLM._build_cache`: the cache before P - 1,
whose token is fed first; compiled, run once to compile, then timed on its
own: `prefill_s`). Then the single-token step `MegaCausalLM.call_with_cache`
(the backbone's cached path that `generate()` runs; compiled: `jax.jit`
with the cache donated on JAX, `tf.function(jit_compile=True)` on
TensorFlow, eager under `torch.no_grad` on torch) decodes greedily, one
token per call, feeding its argmax back. Four steps warm up, then each of
`--tokens` steps is timed on its own, blocking on its result: the median
step is the per-token latency (mean and min too). HF is timed the same way
after its own prefill of P tokens, capped at `--hf-max-tokens` steps (its
steps grow faster than linearly with P: about a second at 8K).

By default the current `KERAS_BACKEND` runs in this process (HF after it).
`--backends jax,tensorflow,torch` runs each backend, and HF once, in a
subprocess of its own (`--worker`, `RESULT` lines, as `compare_hf.py`).

Prints a table per backend (ms per token, prefill seconds, HF ms /
keras-mega ms per position) and two checks per batch size: chunked
latency at the last position / at the first (goal: flat, within 1.1x) and
unchunked growth against the position's (no faster than linear: ms ratio
<= position ratio; the per-position slopes between positions are printed
too, and should not rise). Writes one JSON line per (backend, case, batch,
position), each with `os.getloadavg()`: on a shared machine compare within
one run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import compare_hf  # benchmarks/, the script's directory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# compare_hf.py's LRA-Text sizes as a causal LM (HF `MegaConfig` names).
CONFIG = compare_hf.DECODER
CHUNK = 128
KERAS_CASES = {f"chunk {CHUNK}": CHUNK, "full": None}
HF_CASE = "hf full"
WARMUP = 4  # untimed steps first (the first calls are slower)
FLAT_GOAL = 1.1


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


def step_functions(model):
    """`(step, prefill)`: `step(token [B, 1], cache, index) -> (next_token
    [B, 1], cache)` (greedy: the argmax of the logits) and `prefill(ids,
    mask) -> cache`, both compiled where the backend compiles."""
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


def summary(times, prefill_s):
    return dict(
        ms=1000 * statistics.median(times),
        mean_ms=1000 * statistics.mean(times),
        min_ms=1000 * min(times),
        steps=len(times),
        prefill_s=prefill_s,
    )


def keras_latency(functions, batch, position, tokens):
    """Prefill to `position`, then `tokens` timed single-token steps."""
    import keras
    import numpy as np

    step, prefill = functions
    # The generation length: the window of an unchunked cache.
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
    window = int(keras.ops.shape(cache[0][1])[1])
    token = ids[:, position - 1 : position]
    times = []
    for i in range(WARMUP + tokens):
        index = keras.ops.convert_to_tensor(position - 1 + i, "int32")
        start = time.perf_counter()
        token, cache = step(token, cache, index)
        block((token, cache))
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return dict(summary(times, prefill_s), window=window)


def hf_latency(model, batch, position, tokens):
    """HF's cached decoding, timed as `keras_latency`."""
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
    return summary(times, prefill_s)


def hf_model(chunk=None):
    """HF's causal LM of `CONFIG` (seed 0: the same weights whatever the
    chunking, which does not change the parameters)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    config = dict(CONFIG, use_chunking=bool(chunk), chunk_size=chunk or -1)
    torch.manual_seed(0)
    return transformers.MegaForCausalLM(transformers.MegaConfig(**config))


def keras_models():
    """keras-mega's causal LMs per case, converted from HF checkpoints
    with the weights of `hf_model()`."""
    import keras_mega

    models = {}
    for name, chunk in KERAS_CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            hf_model(chunk).save_pretrained(tmp)
            models[name] = keras_mega.models.MegaCausalLM.from_preset(
                tmp, preprocessor=None
            )
    return models


def grid(settings):
    return [
        (batch, position)
        for batch in settings["batch_sizes"]
        for position in settings["positions"]
    ]


def run_rows(settings):
    """The rows of one backend (`settings["backend"]`: a Keras backend, or
    "hf"), yielded as they are measured."""
    import torch

    if settings.get("torch_threads"):
        torch.set_num_threads(settings["torch_threads"])
    backend = settings["backend"]
    if backend == "hf":
        cases = {HF_CASE: hf_model().eval()}
    else:
        import keras

        assert keras.backend.backend() == backend, keras.backend.backend()
        cases = {n: step_functions(m) for n, m in keras_models().items()}
    for batch, position in grid(settings):
        for case, model in cases.items():
            if case == HF_CASE:
                if position > settings["hf_max_position"]:
                    continue
                result = hf_latency(
                    model, batch, position, settings["hf_tokens"]
                )
            else:
                result = keras_latency(
                    model, batch, position, settings["tokens"]
                )
            row = dict(backend=backend, case=case, batch=batch)
            row.update(position=position, **result)
            row["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            row["torch_threads"] = torch.get_num_threads()
            yield row


def in_subprocess(settings):
    """`run_rows(settings)` in a fresh process with `KERAS_BACKEND` set."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if settings["backend"] != "hf":
        env["KERAS_BACKEND"] = settings["backend"]
    command = [sys.executable, __file__, "--worker", json.dumps(settings)]
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        for line in proc.stdout:
            if line.startswith("RESULT "):
                yield json.loads(line[7:])
        if proc.wait():
            stderr.seek(0)
            error = stderr.read()[-400:]
            yield dict(backend=settings["backend"], error=error)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", help="default 512,2048,8192")
    parser.add_argument("--batch-sizes", help="default 1,8")
    parser.add_argument("--tokens", type=int, help="timed steps (default 32)")
    parser.add_argument(
        "--hf-max-tokens", type=int, help="HF's timed steps (default 8)"
    )
    parser.add_argument(
        "--hf-max-position",
        type=int,
        default=sys.maxsize,
        help="skip HF above this position (its prefill at 8K, batch 8, "
        "takes minutes)",
    )
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument(
        "--backends",
        help="comma-separated Keras backends, each in its own subprocess "
        "(default: the current KERAS_BACKEND, in this process)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads for HF (and Keras on torch): on a shared "
        "machine torch's default threads can slow it several-fold",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: positions 256,1024, batch 1, 8 steps, HF 3 "
        "(unless given)",
    )
    parser.add_argument("--out", default="benchmarks/decode_latency.jsonl")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        for row in run_rows(json.loads(args.worker)):
            print("RESULT " + json.dumps(row), flush=True)
        return
    quick = args.quick
    positions = args.positions or ("256,1024" if quick else "512,2048,8192")
    batch_sizes = args.batch_sizes or ("1" if quick else "1,8")
    settings = dict(
        positions=[int(p) for p in positions.split(",")],
        batch_sizes=[int(b) for b in batch_sizes.split(",")],
        tokens=args.tokens or (8 if quick else 32),
        hf_tokens=args.hf_max_tokens or (3 if quick else 8),
        hf_max_position=args.hf_max_position,
        torch_threads=args.torch_threads,
    )
    if args.backends:
        backends = args.backends.split(",")
        runner = in_subprocess
    else:
        import keras

        backends = [keras.backend.backend()]
        runner = run_rows
    if not args.no_hf:
        backends.append("hf")
    rows = []
    with open(args.out, "w") as f:
        for backend in backends:
            for row in runner(dict(settings, backend=backend)):
                rows.append(row)
                print(json.dumps(row), flush=True)
                f.write(json.dumps(row) + "\n")
                f.flush()
    for backend in backends:
        if backend != "hf":
            print_table(rows, backend, settings)


def fmt(value, pattern="{:.2f}"):
    return "-" if value is None else pattern.format(value)


def print_table(rows, backend, settings):
    chunked, full = KERAS_CASES
    found = {
        (r["backend"], r["case"], r["batch"], r["position"]): r
        for r in rows
        if "error" not in r
    }

    def get(case, batch, position, key="ms"):
        owner = "hf" if case == HF_CASE else backend
        return found.get((owner, case, batch, position), {}).get(key)

    def ratio(a, b):
        return None if a is None or b is None else a / b

    for r in rows:
        if r.get("error") and r["backend"] in (backend, "hf"):
            print(f"\n{r['backend']} failed: {r['error']}")
    print(
        f"\nms per decoded token (median of the timed steps; prefill apart), "
        f"keras-mega on {backend}, HF on torch"
    )
    print(
        f"| batch | position | {chunked} | full | HF full (cached) | "
        f"HF / {chunked} | HF / full | prefill s ({chunked} / full / HF) "
        "| load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for batch, position in grid(settings):
        c, u, h = (get(k, batch, position) for k in (chunked, full, HF_CASE))
        if c is None and u is None:
            continue
        prefill = " / ".join(
            fmt(get(k, batch, position, "prefill_s"))
            for k in (chunked, full, HF_CASE)
        )
        load = get(chunked, batch, position, "loadavg") or []
        print(
            f"| {batch} | {position} | {fmt(c)} | {fmt(u)} | {fmt(h)} | "
            f"{fmt(ratio(h, c), '{:,.0f}x')} | {fmt(ratio(h, u), '{:,.1f}x')} "
            f"| {prefill} | {' '.join(f'{x:.1f}' for x in load)} |"
        )
    positions = sorted(settings["positions"])
    if len(positions) < 2:
        return
    first, last = positions[0], positions[-1]
    longer = last / first
    for batch in settings["batch_sizes"]:
        growth = ratio(get(chunked, batch, last), get(chunked, batch, first))
        if growth is not None:
            verdict = "flat" if growth <= FLAT_GOAL else "NOT flat"
            print(
                f"batch {batch}, {chunked}: ms at {last} / at {first} = "
                f"{growth:.2f}x (goal <= {FLAT_GOAL}x: {verdict})"
            )
        for case in (full, HF_CASE):
            growth = ratio(get(case, batch, last), get(case, batch, first))
            if growth is None:
                continue
            verdict = "linear or better" if growth <= longer else "SUPERLINEAR"
            slopes = []
            for a, b in zip(positions, positions[1:]):
                ms_a, ms_b = get(case, batch, a), get(case, batch, b)
                if ms_a is not None and ms_b is not None:
                    slopes.append(
                        f"{a}->{b}: {1000 * (ms_b - ms_a) / (b - a):.1f}"
                    )
            print(
                f"batch {batch}, {case}: ms at {last} / at {first} = "
                f"{growth:.2f}x for {longer:.0f}x the position ({verdict}); "
                f"slope, ms per token per 1K positions: {', '.join(slopes)}"
            )


if __name__ == "__main__":
    main()
