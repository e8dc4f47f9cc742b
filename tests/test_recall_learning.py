"""The opt-in "timescales" EMA init: its decay distribution, and that it
lets chunked Mega carry a class token across chunks (the recall probe of
`benchmarks/recall_ladder.py`, L=128 cell)."""

import os
import sys
import time

import keras
import numpy as np
import pytest

from keras_mega.layers import ema_initializers
from keras_mega.layers.mega_ema import MegaEMA
from keras_mega.models import MegaBackbone

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
)
import recall_task  # noqa: E402


def _decay(ema):
    """Per-step decay `q = 1 - p * delta` and `p`, as numpy `[kd, N]`."""
    p = 1.0 / (1.0 + np.exp(-keras.ops.convert_to_numpy(ema.damping_factor)))
    delta = 1.0 / (1.0 + np.exp(-keras.ops.convert_to_numpy(ema.decay_factor)))
    return 1.0 - p * delta, p, delta


def _built_ema(**kwargs):
    ema = MegaEMA(hidden_dim=8, ema_dim=16, bidirectional=False, **kwargs)
    ema.build((None, None, 8))
    return ema


def test_default_init_is_paper():
    assert MegaEMA(hidden_dim=4).ema_init == "paper"
    backbone = MegaBackbone(
        vocabulary_size=16,
        num_layers=1,
        hidden_dim=8,
        intermediate_dim=8,
        shared_dim=4,
        ema_dim=4,
    )
    assert backbone.ema_init == "paper"
    assert backbone.get_config()["ema_init"] == "paper"
    # Mega's init: logits ~ N(0, 0.2), so q = 1 - p * delta sits around
    # 0.75 and every dimension forgets within a few tokens.
    q, _, _ = _decay(_built_ema())
    assert 0.72 < q.mean() < 0.78
    assert q.max() < 0.9


def test_timescales_decay_distribution():
    kernel_dim, ema_dim, max_tau = 6, 16, 1024.0
    damping, decay = ema_initializers.timescale_logits(
        kernel_dim, ema_dim, max_tau
    )
    assert damping.shape == decay.shape == (kernel_dim, ema_dim)
    p = 1.0 / (1.0 + np.exp(-damping))
    delta = 1.0 / (1.0 + np.exp(-decay))
    tau = 1.0 / (p * delta)  # q = 1 - 1 / tau
    expected = ema_initializers.timescales(ema_dim, max_tau)
    np.testing.assert_allclose(
        tau, np.broadcast_to(expected, tau.shape), rtol=1e-6
    )
    np.testing.assert_allclose(p, delta, rtol=1e-6)  # p = delta = sqrt(1/tau)
    # Documented spread: from 2 tokens to max_tau, log-uniform, sorted.
    assert expected.min() == pytest.approx(2.0)
    assert expected.max() == pytest.approx(max_tau)
    np.testing.assert_allclose(np.diff(np.log(expected)).std(), 0.0, atol=1e-9)

    # Through the layer, with its default noise (std 0.2 in logit space):
    # each dimension's timescale stays within ~2x of its target.
    q, _, _ = _decay(
        _built_ema(ema_init="timescales", ema_max_timescale=max_tau)
    )
    ratio = (1.0 / (1.0 - q)) / expected[None, :]
    assert np.all(ratio > 0.4) and np.all(ratio < 2.5)
    assert np.median(np.abs(np.log(ratio))) < 0.3


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="one learning test, on the fastest CPU backend",
)
def test_chunked_timescales_solves_recall_128():
    start = time.time()
    result = recall_task.train_keras(
        128,
        chunk_size=32,
        ema_init="timescales",
        seed=0,
        steps=600,
        eval_every=50,
        log=lambda line: None,
    )
    assert result["steps_to_95"] is not None, result["history"]
    assert result["final_accuracy"] >= 0.95
    seconds = time.time() - start
    print(f"solved in {result['steps_to_95']} steps, {seconds:.0f}s")
