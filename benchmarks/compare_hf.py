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
`hf_tokens_per_s`, `ratio_vs_hf`.
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
CAUSAL_CPU = dict(
    ENCODER,
    hidden_size=256,
    intermediate_size=512,
    nffn_hidden_size=512,
    shared_representation_size=128,
    bidirectional=False,
    is_decoder=True,
    normalize_before_mega=True,
    normalize_before_ffn=True,
)
BATCH = 2


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
    jit = keras.backend.backend() != "torch"
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
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(case, tmp)
        if case["backend"] == "hf":
            result = run_hf(case, tmp, args.steps)
        else:
            result = run_keras(case, tmp, args.steps)
    result["peak_memory_mb"] = peak_mb()
    print("RESULT " + json.dumps(result), flush=True)


def measure(case, steps):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if case["backend"] != "hf":
        env["KERAS_BACKEND"] = case["backend"]
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
    parser.add_argument("--backends", default="jax,tensorflow,torch")
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
                    "error": ours.get("error") or hf.get("error"),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(
        "\n| case | backend | tokens/s | HF tokens/s | ratio | compile s | peak MB (HF) |"
    )
    print("|---|---|---|---|---|---|---|")

    def fmt(v, p="{:,.0f}"):
        return p.format(v) if isinstance(v, (int, float)) else "-"

    for r in rows:
        print(
            f"| {r['case']} | {r['backend']} | {fmt(r['tokens_per_s'])} | "
            f"{fmt(r['hf_tokens_per_s'])} | {fmt(r['ratio_vs_hf'], '{:.2f}')} | "
            f"{fmt(r['compile_s'], '{:.1f}')} | {fmt(r['peak_memory_mb'])} "
            f"({fmt(r['hf_peak_memory_mb'])}) |"
        )


if __name__ == "__main__":
    main()
