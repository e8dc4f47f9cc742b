"""Smoke test of examples/fine_tune_long_classifier.py."""

import importlib.util
import os
import time

import keras
import pytest

EXAMPLE = os.path.join(
    os.path.dirname(__file__), "..", "examples", "fine_tune_long_classifier.py"
)


def load_example():
    spec = importlib.util.spec_from_file_location("fine_tune_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    keras.config.backend() != "torch",
    reason="the script does the same on every backend; it runs on torch, "
    "where it takes seconds (the tasks' fit on raw strings is tested per "
    "backend in test_mega_tasks.py, backend equality in test_examples.py)",
)
def test_smoke_run(capsys):
    # This checks that the script runs end to end (tokenizer training,
    # preprocessing, fit, evaluate), not that it learns.
    accuracy = load_example().main(["--smoke"])
    assert 0.0 <= accuracy <= 1.0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "seq_len=64" in out


@pytest.mark.large
def test_quick_run_learns_within_two_minutes():
    if keras.config.backend() != "jax":
        pytest.skip("the time budget is for the JAX backend")
    start = time.time()
    accuracy = load_example().main(["--quick"])
    assert time.time() - start < 120
    assert accuracy > 0.8
