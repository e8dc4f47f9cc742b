"""Per-token decoding latency against position: keras-mega vs HF Mega.

    KERAS_BACKEND=jax python benchmarks/decode_latency.py
        [--positions 512,1024,2048,4096,8192] [--tokens 32] [--no-hf]

A causal Mega LM (4 layers, hidden 128, intermediate 256, shared 64, EMA
16, batch 1) decodes `--tokens` tokens after a prompt of each length, with
`MegaCausalLM.generate` (greedy, compiled) on the current Keras backend,
chunked (chunk 128) and unchunked, next to HF's cached decoding (unchunked:
HF's cached decoding crashes with chunking). The prefill is excluded: the
per-token time is (time to generate prompt + N tokens - time to generate
prompt + 1 token) / (N - 1), each the best of 3 runs after a warm-up.
Prints a table and
JSON lines.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CONFIG = dict(
    vocab_size=1000,
    hidden_size=128,
    num_hidden_layers=4,
    intermediate_size=256,
    nffn_hidden_size=256,
    shared_representation_size=64,
    ema_projection_size=16,
    bidirectional=False,
    is_decoder=True,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
    max_positions=16384,
)


def keras_latency(model, position, tokens):
    import numpy as np

    prompt = (
        np.random.default_rng(0)
        .integers(3, 1000, (1, position))
        .astype("int32")
    )

    def run(new):
        length = position + new
        ids = np.ones((1, length), "int32")
        ids[:, :position] = prompt
        mask = np.zeros((1, length), "int32")
        mask[:, :position] = 1
        inputs = {"token_ids": ids, "padding_mask": mask}
        model.generate(inputs, stop_token_ids=None)  # warm-up (compiles)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model.generate(inputs, stop_token_ids=None)
            times.append(time.perf_counter() - start)
        return min(times)

    return (run(tokens) - run(1)) / (tokens - 1)


def hf_latency(model, position, tokens):
    import numpy as np
    import torch

    ids = torch.tensor(
        np.random.default_rng(0).integers(3, 1000, (1, position))
    )
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(tokens):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) / tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", default="512,1024,2048,4096,8192")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--out", default="benchmarks/decode_latency.jsonl")
    args = parser.parse_args()

    import keras
    import torch
    import transformers

    import keras_mega

    torch.manual_seed(0)
    hf = transformers.MegaForCausalLM(transformers.MegaConfig(**CONFIG)).eval()
    backend = keras.backend.backend()
    models = {}
    import tempfile

    for name, chunk in (("chunk 128", 128), ("full", None)):
        config = dict(CONFIG, use_chunking=bool(chunk), chunk_size=chunk or -1)
        with tempfile.TemporaryDirectory() as tmp:
            transformers.MegaForCausalLM(
                transformers.MegaConfig(**config)
            ).save_pretrained(tmp)
            model = keras_mega.models.MegaCausalLM.from_preset(
                tmp, preprocessor=None
            )
        model.compile(sampler="greedy")
        models[name] = model
    rows = []
    for position in [int(p) for p in args.positions.split(",")]:
        row = {"position": position, "backend": backend}
        for name, model in models.items():
            row[f"keras_{name}_ms"] = 1000 * keras_latency(
                model, position, args.tokens
            )
        if not args.no_hf:
            row["hf_full_ms"] = 1000 * hf_latency(
                hf, position, min(args.tokens, 16)
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"\nms per token, batch 1, {backend}")
    print(
        "| position | keras-mega chunk 128 | keras-mega full | HF full (cached) |"
    )
    print("|---|---|---|---|")
    for r in rows:
        hf_ms = f"{r['hf_full_ms']:.1f}" if "hf_full_ms" in r else "-"
        print(
            f"| {r['position']} | {r['keras_chunk 128_ms']:.1f} | "
            f"{r['keras_full_ms']:.1f} | {hf_ms} |"
        )


if __name__ == "__main__":
    main()
