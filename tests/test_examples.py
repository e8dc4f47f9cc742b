"""Each example runs on the current backend and gives its stated result.

The suite runs once per backend (`scripts/run_tests.py` sets
KERAS_BACKEND), so every test here runs on JAX, TensorFlow and torch, except
the three-backend comparison, which runs all three itself. The examples
run in this process (their `main()`): a subprocess would pay a Python start
and a keras-hub (TensorFlow) import per example.
"""

import re
import warnings

import keras
import pytest

# XLA without most optimizations on JAX (tests/conftest.py): compiling is
# most of these tiny models' time; it cut the CPU time of this file and
# test_example_classifier.py on JAX from 90 to 62 s.
pytestmark = pytest.mark.usefixtures("quick_jax_compiles", "one_torch_thread")

PNG = b"\x89PNG\r\n\x1a\n"


def no_user_warnings(caught):
    ours = [w for w in caught if issubclass(w.category, UserWarning)]
    assert not ours, [f"{w.filename}: {w.message}" for w in ours]


def test_plot_ema_kernels(tmp_path, load_example):
    out = tmp_path / "ema.png"
    slowest = load_example("plot_ema_kernels.py").main(["--out", str(out)])
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    # The paper's init forgets within a few tokens (6.3-7.9 measured);
    # "timescales" reaches ema_max_timescale (1024, plus a jitter of the
    # logits: 2,229 measured).
    assert slowest["paper"] < 16
    assert slowest["timescales"] > 1000


def test_plot_attention(tmp_path, load_example):
    out = tmp_path / "attention.png"
    result = load_example("plot_attention.py").main(["--out", str(out)])
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 10_000
    # 32 tokens in chunks of 16, two layers, causal softmax attention.
    assert (result["layers"], result["chunks"]) == (2, 2)
    assert result["row_sum_error"] < 1e-5
    assert result["future_weight"] == 0.0


def test_convert_and_compare(tmp_path, capsys, load_example):
    pytest.importorskip("transformers")
    example = load_example("convert_and_compare.py")
    example.main(["--out", str(tmp_path / "p")])
    stdout = capsys.readouterr().out
    error = float(stdout.split("on logits:")[1].split()[0])
    assert error < 1e-5
    assert (tmp_path / "p" / "config.json").exists()


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="runs all three backends itself (from torch, whose other example "
    "tests take the least time)",
)
def test_same_model_on_three_backends(load_example):
    # torch in this process, JAX and TensorFlow in a subprocess each.
    example = load_example("same_model_three_backends.py")
    report = example.compare(["jax", "tensorflow", "torch"])
    assert report["backends"] == ["jax", "tensorflow", "torch"]
    assert report["max_difference"] < 1e-5


def test_generate_text(load_example):
    pytest.importorskip("tokenizers")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = load_example("generate_text.py").main(["--steps", "25"])
    # A short fit memorizes the built-in text: greedy continues it.
    assert "fox jumps over the lazy dog" in results["greedy"][0]
    assert "on the mat" in results["greedy"][1]
    assert [t[:11] for t in results["top_k"]] == ["the quick b", "the cat sat"]
    no_user_warnings(caught)


def test_demo_smoke_learns_saves_and_reloads(tmp_path, capsys, load_example):
    """`make demo` end to end, small: fit, accuracy, preset, exact reload."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = load_example("demo.py").main(
            ["--smoke", "--out", str(tmp_path / "preset")]
        )
    out = capsys.readouterr().out
    print(out[-400:])  # shown by `pytest -rP`
    assert code == 0, out[-3000:]
    accuracy, majority = re.search(
        r"validation accuracy ([\d.]+)% after .* majority-class baseline "
        r"([\d.]+)%",
        out,
    ).groups()
    # 4 classes (chance 25%): the smoke run learns the task (measured 96.9%
    # on JAX, 100% on TensorFlow and torch, in 100-150 steps).
    assert float(accuracy) >= 90.0
    assert float(accuracy) >= float(majority) + 10.0
    assert "the reloaded model agrees exactly" in out
    assert (tmp_path / "preset" / "config.json").exists()
    no_user_warnings(caught)


def test_demo_fails_unless_it_clearly_beats_the_baseline(load_example):
    """The exit rule of `make demo`, without training."""
    check = load_example("demo.py").check
    # The old demo's result: the majority class in every epoch.
    assert check(0.309, 0.309, 0.95, True)
    assert check(0.38, 0.289, 0.0, True)  # --quick/--smoke: < 10 points
    assert check(0.90, 0.289, 0.95, True)  # full run: below its 95%
    assert check(0.996, 0.289, 0.95, False)  # the reload differs
    assert check(0.996, 0.289, 0.95, True) == []
    assert check(0.40, 0.289, 0.0, True) == []
