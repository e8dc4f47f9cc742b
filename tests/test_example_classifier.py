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


def test_quick_run_smoke(capsys):
    # --quick, shrunk further: this checks that the script runs end to end.
    accuracy = load_example().main(
        ["--quick", "--num-train", "32", "--num-test", "16", "--epochs", "1",
         "--seq-len", "128", "--chunk-size", "32"]
    )  # fmt: skip
    assert 0.0 <= accuracy <= 1.0
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.large
def test_quick_run_learns_within_two_minutes():
    if keras.config.backend() != "jax":
        pytest.skip("the time budget is for the JAX backend")
    start = time.time()
    accuracy = load_example().main(["--quick"])
    assert time.time() - start < 120
    assert accuracy > 0.8
