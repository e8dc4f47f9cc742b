"""Smoke tests: each example runs on the current backend and does its job."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, timeout=300):
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("name", ["plot_ema_kernels.py", "plot_attention.py"])
def test_plot_examples_write_png(name, tmp_path):
    out = tmp_path / "plot.png"
    run_example(name, "--out", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_convert_and_compare(tmp_path):
    pytest.importorskip("transformers")
    stdout = run_example("convert_and_compare.py", "--out", str(tmp_path / "p"))
    error = float(stdout.split("on logits:")[1].split()[0])
    assert error < 1e-5
    assert (tmp_path / "p" / "config.json").exists()


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="runs all three backends itself"
)
def test_same_model_on_three_backends():
    stdout = run_example("same_model_three_backends.py", timeout=600)
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["backends"] == ["jax", "tensorflow", "torch"]
    assert report["max_difference"] < 1e-5


def test_generate_text_example():
    pytest.importorskip("tokenizers")
    stdout = run_example("generate_text.py", "--steps", "25")
    greedy = [
        line
        for line in stdout.splitlines()
        if line.strip().startswith("greedy:")
    ]
    assert len(greedy) == 2
    # A short fit memorizes the built-in text: greedy continues it.
    assert "fox jumps over the lazy dog" in greedy[0]


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the same script on every backend; seconds on torch",
)
def test_demo_runs_saves_and_reloads(tmp_path):
    """`make demo` end to end, tiny: fit, accuracy, preset, exact reload."""
    out = run_example("demo.py", "--smoke", "--out", str(tmp_path / "preset"))
    assert "validation accuracy" in out
    assert "the reloaded model agrees exactly" in out
    assert os.path.exists(tmp_path / "preset" / "config.json")
