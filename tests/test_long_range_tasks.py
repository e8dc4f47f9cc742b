"""External long-range tasks (`benchmarks/mqar.py`, `benchmarks/listops.py`):
one small learning run each, on JAX only (the fastest CPU backend)."""

import os
import sys
import time

import keras
import numpy as np
import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
)
import listops
import mqar

only_jax = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="one learning test per task, on the fastest CPU backend",
)


@only_jax
def test_mqar_mega_full_attention_learns_recall():
    # The data follows the definition: keys from the lower half, values from
    # the upper half, each key queried once after the pairs, label = value.
    ids, labels = mqar.make_mqar(np.random.default_rng(0), 8, 32, 4, 128)
    _, pos, tgt = mqar.query_view(ids, labels)
    for row in range(8):
        pairs = dict(zip(ids[row, 0:8:2], ids[row, 1:8:2]))
        assert all(1 <= k < 64 for k in pairs) and len(pairs) == 4
        assert {ids[row, p] for p in pos[row]} == set(pairs)
        assert [pairs[ids[row, p]] for p in pos[row]] == list(tgt[row])

    start = time.time()
    result = mqar.train_mqar(
        "mega-full",
        32,
        4,
        64,
        128,
        3e-3,
        600,
        eval_every=50,
        stop_at=0.9,
        test_size=256,
        log=lambda line: None,
    )
    assert result["best_accuracy"] >= 0.9, result["history"]
    print(f"MQAR {result['history']}, {time.time() - start:.0f}s")


@only_jax
def test_listops_mega_learns_above_majority_class():
    data = listops.load_data(2000, 500, 16, 64, seed=0)
    (_, ytr), (xte, yte) = data
    # The generator's labels agree with an independent stack evaluator.
    for ids, label in zip(xte[:50], yte[:50]):
        tokens = [listops.VOCAB[i] for i in ids if i != listops.PAD_ID]
        assert listops.evaluate_tokens(tokens) == label
    majority = listops.majority_accuracy(ytr, yte)

    start = time.time()
    result = listops.train_listops(
        "mega",
        data,
        width=64,
        lr=3e-3,
        steps=200,
        eval_every=100,
        log=lambda line: None,
    )
    assert result["final_accuracy"] >= majority + 0.08, (
        majority,
        result["history"],
    )
    print(
        f"ListOps {result['history']}, majority {majority:.3f}, "
        f"{time.time() - start:.0f}s"
    )
