"""Where JAX's full-attention inference at L=1024 spends its time.

    KERAS_BACKEND=jax python benchmarks/profile_jax_full.py [--dump DIR]

The compare_hf encoder (full attention, batch 2, L=1024). Times the whole
compiled forward, then each piece of one Mega layer compiled on its own
(weights passed as arguments, as in the real step), and summarizes the
optimized HLO of the forward (op counts, XLA's cost analysis). `--dump`
also writes XLA's HLO dump (`--xla_dump_to`).
"""

import argparse
import collections
import os
import re
import statistics
import sys
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("--dump")
parser.add_argument("--length", type=int, default=1024)
parser.add_argument("--reps", type=int, default=10)
args = parser.parse_args()
if args.dump:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={args.dump}"
    )
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import compare_hf  # noqa: E402

import keras_mega  # noqa: E402

case = dict(model="encoder", length=args.length, chunk=0)
with tempfile.TemporaryDirectory() as tmp:
    compare_hf.make_checkpoint(case, tmp)
    backbone = keras_mega.models.MegaBackbone.from_preset(tmp)
B, L = compare_hf.BATCH, args.length
ids = np.random.default_rng(0).integers(3, 1000, (B, L)).astype("int32")
inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
variables = backbone.trainable_variables + backbone.non_trainable_variables
values = [v.value for v in variables]


def compiled(fn):
    def stateless(values, *a):
        with keras.StatelessScope(state_mapping=zip(variables, values)):
            return fn(*a)

    return jax.jit(stateless)


def timed(name, fn, *a):
    f = compiled(fn)
    jax.block_until_ready(f(values, *a))
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        jax.block_until_ready(f(values, *a))
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    print(f"{name:42s} {ms:8.2f} ms   (load {os.getloadavg()[0]:.1f})")
    return f, ms


print(f"JAX {jax.__version__}, encoder full attention B={B} L={L}")
forward, total = timed(
    "whole forward (4 layers)", lambda x: backbone(x), inputs
)

block = backbone.mega_layers[0]
layer = block.mega_layer
x = jax.block_until_ready(
    compiled(lambda i: backbone.embed(i["token_ids"]))(values, inputs)
)
mask = inputs["padding_mask"]


def project(x):
    return layer._project(x, False)


residual, xn, value = compiled(project)(values, x)
ema = compiled(lambda xn: layer.ema_gate(xn, padding_mask=mask))(values, xn)
u, r, hx, q, k = compiled(lambda xn, e: layer._gates(e, False))(values, xn, ema)
att, _ = compiled(
    lambda q, k, v: layer._chunked_attention(q, k, v, mask, None, False)
)(values, q, k, value)
out = compiled(lambda *a: layer._output(*a, False))(
    values, residual, u, r, hx, att
)
pieces = [
    ("norm + v_proj (_project)", project, (x,)),
    ("EMA (ema_gate)", lambda xn: layer.ema_gate(xn, padding_mask=mask), (xn,)),
    ("mx_proj + gates (_gates)", lambda xn, e: layer._gates(e, False),
     (xn, ema)),
    ("attention L x L (_attention)",
     lambda q, k, v: layer._chunked_attention(q, k, v, mask, None, False),
     (q, k, value)),
    ("h_proj + output + norm (_output)",
     lambda *a: layer._output(*a, False), (residual, u, r, hx, att)),
    ("whole gated-attention layer", lambda x: layer(x, padding_mask=mask),
     (x,)),
    ("FFN block", lambda o: block.nffn(o), (out,)),
]  # fmt: skip
print("\nOne layer, each piece compiled alone:")
for name, fn, a in pieces:
    timed("  " + name, fn, *a)

timed("  (rotary-biased q k^T alone)", lambda q, k: layer.rel_pos_bias.biased_scores(
    q[:, None].astype("float32") * 0.125, k[:, None].astype("float32"),
    np.arange(L), np.arange(L)), q, k)  # fmt: skip

hlo = compiled(lambda x: backbone(x)).lower(values, inputs).compile()
text = hlo.as_text()
ops = collections.Counter(
    m.group(1) for m in re.finditer(r"=\s*\S+\s+([a-z\-]+)\(", text)
)
print("\nOptimized HLO of the forward, op counts:")
for op, n in ops.most_common(18):
    print(f"  {op:24s} {n}")
fusions = collections.Counter(re.findall(r"kind=(k\w+)", text))
print("  fusion kinds:", dict(fusions))
cost = hlo.cost_analysis()
if isinstance(cost, list):
    cost = cost[0]
flops = cost.get("flops", 0)
nbytes = cost.get("bytes accessed", 0)
print(
    f"XLA cost analysis: {flops / 1e9:.2f} GFLOP, {nbytes / 1e9:.2f} GB "
    f"accessed; at {total:.1f} ms: {flops / total / 1e6:.1f} GFLOP/s"
)
transposes = re.findall(r"(\S+) = (\S+) transpose\(", text)
print(f"  transposes: {len(transposes)}; e.g.", [t[1] for t in transposes[:6]])
copies = re.findall(r"(\S+) = (\S+) copy\(", text)
print(f"  copies: {len(copies)}; e.g.", [c[1] for c in copies[:6]])
dots = re.findall(r"= (\S+) dot\(", text)
print(f"  dots: {len(dots)}; shapes:", collections.Counter(dots).most_common(8))
ffts = re.findall(r"= (\S+) fft\(", text)
print(f"  ffts: {len(ffts)}:", collections.Counter(ffts).most_common(4))
