"""keras-mega against HF transformers' Mega on the same machine.

    python benchmarks/compare_hf.py [--quick] [--backends jax,tensorflow,torch]
        [--lengths 1024,4096] [--steps 5] [--out results.jsonl]
        [--full-max 4096]

The LRA-Text-sized encoder (4 layers, hidden 128, intermediate 256, shared
representation 64, EMA 16, ScaleNorm post-norm, softmax, bidirectional,
batch 2) at each length, with full attention and with chunk 128: training
step (forward, backward, AdamW update) and inference tokens/s, and the peak
memory of the process, next to HF's Mega with the same weights and shapes.
Every measurement runs in its own subprocess (so peak memory is its own);
compile time is reported apart, warm-up excluded, the median of `--steps`
timed steps counts. `--causal` adds the causal LM case (12 layers, hidden
512, chunk 2048 on GPU; scaled down to 4 layers, hidden 256, chunk 256 on
CPU). `--lengths 1024,16384` checks that chunked throughput per token is
flat in L (full attention is skipped above `--full-max`). Prints a table
and writes JSON lines with `case`, `backend`, `tokens_per_s`,
`hf_tokens_per_s`, `ratio_vs_hf`, `roofline_fraction`.

The roofline: `flops_per_token` (below) counts, from the config, the
matmuls of each layer (the projections, the attention's `q k^T` and
`p v` over the span it attends, the FFN) plus the EMA's FFT convolution,
times 3 for a training step (forward, and the backward's two matmuls per
forward one). The peak is measured, not quoted: the best of a few
2048 x 2048 float32 matmuls on each backend (`keras.ops.matmul`, compiled
as the model is; torch's for HF), measured once up front and again in each
case's subprocess right after the case (so that on a shared machine it
sees the same load). A case's `roofline_fraction` is its tokens/s x FLOPs
per token / its subprocess's peak.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ENCODER = dict(
    vocab_size=1000,
    hidden_size=128,
    num_hidden_layers=4,
    intermediate_size=256,
    nffn_hidden_size=256,
    shared_representation_size=64,
    ema_projection_size=16,
    normalization_type="scalenorm",
    normalize_before_mega=False,
    normalize_before_ffn=False,
    attention_activation="softmax",
    bidirectional=True,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
    max_positions=16384,
    relative_positional_bias="rotary",
)
# The same sizes as a causal LM (pre-norm, as HF's defaults).
DECODER = dict(
    ENCODER,
    bidirectional=False,
    is_decoder=True,
    normalize_before_mega=True,
    normalize_before_ffn=True,
)
CAUSAL_CPU = dict(
    DECODER,
    hidden_size=256,
    intermediate_size=512,
    nffn_hidden_size=512,
    shared_representation_size=128,
)
BATCH = 2


def keras_config(hf_config=ENCODER, **overrides):
    """The `MegaBackbone` arguments of an HF config of this file (the
    LRA-Text encoder by default), through keras-mega's converter: the one
    place the other benchmarks take the model from."""
    from keras_mega.convert.hf import convert_backbone_config

    config = convert_backbone_config({"model_type": "mega", **hf_config})
    return {**config, **overrides}


def make_config(case):
    config = dict(CAUSAL_CPU if case["model"] == "causal" else ENCODER)
    if case["chunk"]:
        config.update(use_chunking=True, chunk_size=case["chunk"])
    return config


def make_checkpoint(case, path):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.MegaConfig(**make_config(case))
    transformers.MegaModel(config, add_pooling_layer=False).save_pretrained(
        path
    )


def flops_per_token(case, kind="infer"):
    """Forward FLOPs per token of the backbone `case` (x3 for "train").

    Per layer: value and gate projections `D -> H` and `D -> Z + H + 2D`,
    the output projection `H -> D`, attention `q k^T` (Z) and `p v` (H)
    over a span of `S` keys (the chunk, or the whole length), the FFN
    `D -> F -> D`, and the EMA's FFT convolution (three real FFTs of
    length 2L per channel, about 2.5 n log2 n each). Softmax, norms and
    gates are elementwise and left out.
    """
    import math

    config = make_config(case)
    d = config["hidden_size"]
    h = config["intermediate_size"]
    z = config["shared_representation_size"]
    f = config["nffn_hidden_size"]
    length = case["length"]
    span = min(case["chunk"] or length, length)
    n = 2 * length
    ema = d * 3 * 2.5 * n * math.log2(n) / length
    layer = (
        2 * d * h
        + 2 * d * (z + h + 2 * d)
        + 2 * h * d
        + 2 * span * (z + h)
        + 4 * d * f
        + ema
    )
    forward = config["num_hidden_layers"] * layer
    return 3 * forward if kind == "train" else forward


PEAK_SIZE = 2048


def matmul_peak(backend, reps=5):
    """The best float32 `PEAK_SIZE`^3 matmul rate on `backend`, FLOP/s."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((PEAK_SIZE, PEAK_SIZE)).astype("float32")
    b = rng.standard_normal((PEAK_SIZE, PEAK_SIZE)).astype("float32")
    if backend == "hf":
        import torch

        a, b = torch.from_numpy(a), torch.from_numpy(b)

        def run():
            return torch.matmul(a, b)

    else:
        import keras

        a, b = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
        if backend == "jax":
            import jax

            matmul = jax.jit(keras.ops.matmul)

            def run():
                return matmul(a, b).block_until_ready()

        elif backend == "tensorflow":
            import tensorflow as tf

            matmul = tf.function(keras.ops.matmul, jit_compile=True)

            def run():
                return matmul(a, b).numpy()

        else:

            def run():
                return keras.ops.matmul(a, b)

    run()  # warm-up (compiles)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * PEAK_SIZE**3 / best


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, steps):
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    step()  # second warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def run_keras(case, checkpoint, steps):
    import keras
    import numpy as np

    import keras_mega

    backbone = keras_mega.models.MegaBackbone.from_preset(checkpoint)
    length = case["length"]
    ids = (
        np.random.default_rng(0)
        .integers(3, 1000, (BATCH, length))
        .astype("int32")
    )
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    target = np.zeros((BATCH, length, backbone.hidden_dim), "float32")
    # "torch-compile": torch with `jit_compile=True` (torch.compile).
    jit = keras.backend.backend() != "torch" or case["backend"].endswith(
        "-compile"
    )
    backbone.compile(
        optimizer=keras.optimizers.AdamW(1e-4), loss="mse", jit_compile=jit
    )
    result = {}
    c, t = time_steps(lambda: backbone.train_on_batch(inputs, target), steps)
    result.update(train_compile_s=c, train_tokens_per_s=BATCH * length / t)
    c, t = time_steps(lambda: backbone.predict_on_batch(inputs), steps)
    result.update(infer_compile_s=c, infer_tokens_per_s=BATCH * length / t)
    return result


def run_hf(case, checkpoint, steps):
    import numpy as np
    import torch
    import transformers

    model = transformers.MegaModel.from_pretrained(
        checkpoint, add_pooling_layer=False
    )
    length = case["length"]
    ids = torch.tensor(
        np.random.default_rng(0).integers(3, 1000, (BATCH, length))
    )
    mask = torch.ones_like(ids)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def train():
        model.train()
        optimizer.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, use_cache=False)
        out.last_hidden_state.square().mean().backward()
        optimizer.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    result = {}
    c, t = time_steps(train, steps)
    result.update(train_compile_s=c, train_tokens_per_s=BATCH * length / t)
    c, t = time_steps(infer, steps)
    result.update(infer_compile_s=c, infer_tokens_per_s=BATCH * length / t)
    return result


def worker(args):
    case = json.loads(args.worker)
    if case.get("peak"):
        result = {"peak_flops": matmul_peak(case["backend"])}
        print("RESULT " + json.dumps(result), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(case, tmp)
        if case["backend"] == "hf":
            result = run_hf(case, tmp, args.steps)
        else:
            result = run_keras(case, tmp, args.steps)
    result["peak_memory_mb"] = peak_mb()
    # The peak again, in this process right after the case: on a shared
    # machine it then sees the same load as the case did.
    result["peak_flops"] = matmul_peak(case["backend"].split("-")[0])
    print("RESULT " + json.dumps(result), flush=True)


def measure(case, steps):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if case["backend"] != "hf":
        env["KERAS_BACKEND"] = case["backend"].split("-")[0]
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            json.dumps(case),
            "--steps",
            str(steps),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout)[-400:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="L=1024 only, 2 steps"
    )
    parser.add_argument(
        "--backends",
        default="jax,tensorflow,torch",
        help="comma-separated; torch-compile is torch with jit_compile=True",
    )
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument(
        "--full-max",
        type=int,
        default=4096,
        help="full attention only up to this length (chunked at every one)",
    )
    parser.add_argument("--out", default="benchmarks/compare_hf.jsonl")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    lengths = (
        [1024] if args.quick else [int(x) for x in args.lengths.split(",")]
    )
    steps = 2 if args.quick else args.steps
    cases = [
        dict(model="encoder", length=length, chunk=chunk)
        for length in lengths
        for chunk in (0, 128)
        if chunk or length <= args.full_max
    ]
    if args.causal:
        cases += [dict(model="causal", length=max(lengths), chunk=256)]
    peaks = {}
    for backend in ["hf"] + args.backends.split(","):
        if backend.endswith("-compile"):
            continue  # the peak of its backend
        peak = measure(dict(backend=backend, peak=True), steps)
        peaks[backend] = peak.get("peak_flops")
        print(
            json.dumps(
                {"matmul_peak_gflops": (peaks[backend] or 0) / 1e9,
                 "backend": backend, "loadavg": os.getloadavg()}
            ),
            flush=True,
        )  # fmt: skip
    rows = []
    for case in cases:
        name = f"{case['model']} L={case['length']} " + (
            f"chunk {case['chunk']}" if case["chunk"] else "full"
        )
        hf = measure(dict(case, backend="hf"), steps)
        for backend in args.backends.split(","):
            ours = measure(dict(case, backend=backend), steps)
            for kind in ("train", "infer"):
                key = f"{kind}_tokens_per_s"
                flops = flops_per_token(case, kind)

                def fraction(tokens_per_s, peak):
                    if tokens_per_s is None or not peak:
                        return None
                    return tokens_per_s * flops / peak

                row = {
                    "case": f"{name} {kind}",
                    "backend": backend,
                    "tokens_per_s": ours.get(key),
                    "hf_tokens_per_s": hf.get(key),
                    "ratio_vs_hf": (ours[key] / hf[key])
                    if key in ours and key in hf
                    else None,
                    "compile_s": ours.get(f"{kind}_compile_s"),
                    "peak_memory_mb": ours.get("peak_memory_mb"),
                    "hf_peak_memory_mb": hf.get("peak_memory_mb"),
                    "flops_per_token": flops,
                    "matmul_peak_flops": ours.get("peak_flops"),
                    "hf_matmul_peak_flops": hf.get("peak_flops"),
                    "roofline_fraction": fraction(
                        ours.get(key), ours.get("peak_flops")
                    ),
                    "hf_roofline_fraction": fraction(
                        hf.get(key), hf.get("peak_flops")
                    ),
                    "loadavg": os.getloadavg(),
                    "error": ours.get("error") or hf.get("error"),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(
        "\nmatmul peak GFLOP/s (float32 2048^3, measured up front): "
        + ", ".join(f"{b} {(p or 0) / 1e9:.0f}" for b, p in peaks.items())
        + " (each row's roofline uses the peak its own subprocess measured "
        "right after the case)"
    )
    print(
        "\n| case | backend | tokens/s | HF tokens/s | ratio | MFLOP/token "
        "| roofline (HF) | compile s | peak MB (HF) | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def fmt(v, p="{:,.0f}"):
        return p.format(v) if isinstance(v, (int, float)) else "-"

    for r in rows:
        print(
            f"| {r['case']} | {r['backend']} | {fmt(r['tokens_per_s'])} | "
            f"{fmt(r['hf_tokens_per_s'])} | {fmt(r['ratio_vs_hf'], '{:.2f}')} | "
            f"{r['flops_per_token'] / 1e6:.1f} | "
            f"{fmt(r['roofline_fraction'], '{:.0%}')} "
            f"({fmt(r['hf_roofline_fraction'], '{:.0%}')}) | "
            f"{fmt(r['compile_s'], '{:.1f}')} | {fmt(r['peak_memory_mb'])} "
            f"({fmt(r['hf_peak_memory_mb'])}) | "
            f"{' '.join(f'{x:.1f}' for x in r['loadavg'])} |"
        )
    print_goal_table(rows)


def print_goal_table(rows):
    """The README table: one row per case, every backend's ratio to HF,
    JAX against the fastest backend, and the ceiling: the ratio a backend
    would reach at 100% of the matmul roofline (1 / HF's fraction), which
    bounds what any implementation of the same FLOPs can reach."""
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    print(
        "\n| case | HF tokens/s (roofline) | "
        + " | ".join(backends)
        + " | JAX / fastest | ceiling |"
    )
    print("|---" * (len(backends) + 4) + "|")
    for case in cases:
        by = {r["backend"]: r for r in rows if r["case"] == case}
        first = next(iter(by.values()))
        cells, speeds = [], {}
        for b in backends:
            r = by.get(b, {})
            if r.get("tokens_per_s") and r.get("ratio_vs_hf"):
                speeds[b] = r["tokens_per_s"]
                cells.append(
                    f"{r['tokens_per_s']:,.0f} ({r['ratio_vs_hf']:.2f}x, "
                    f"{r['roofline_fraction']:.0%})"
                )
            else:
                cells.append("-")
        jax_vs = (
            f"{speeds['jax'] / max(speeds.values()):.2f}"
            if "jax" in speeds
            else "-"
        )
        hf_fraction = first.get("hf_roofline_fraction")
        ceiling = f"{1 / hf_fraction:.1f}x" if hf_fraction else "-"
        hf = first.get("hf_tokens_per_s")
        hf_cell = (
            f"{hf:,.0f} ({hf_fraction:.0%})" if hf and hf_fraction else "-"
        )
        print(
            f"| {case} | {hf_cell} | "
            + " | ".join(cells)
            + f" | {jax_vs} | {ceiling} |"
        )


if __name__ == "__main__":
    main()
