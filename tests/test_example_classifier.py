"""examples/fine_tune_long_classifier.py learns, on every backend."""

import warnings

import pytest

# XLA without most optimizations on JAX (tests/conftest.py): compiling is
# most of these tiny models' time; it cut the CPU time of this file and
# test_examples.py on JAX from 90 to 62 s.
pytestmark = pytest.mark.usefixtures("quick_jax_compiles", "one_torch_thread")

EXAMPLE = "fine_tune_long_classifier.py"


def test_smoke_run_learns(capsys, load_example):
    # Tokenizer training, preprocessing of raw strings, fit, evaluate: 64
    # tokens, 48 steps. Binary, chance 0.5; measured 0.984 (JAX), 1.000
    # (TensorFlow) and 1.000 (torch).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accuracy = load_example(EXAMPLE).main(["--smoke"])
    out = capsys.readouterr().out
    print(out[-200:])  # shown by `pytest -rP`
    assert accuracy >= 0.8, out[-2000:]
    assert "test accuracy" in out and "seq_len=64" in out
    ours = [w for w in caught if issubclass(w.category, UserWarning)]
    assert not ours, [str(w.message) for w in ours]


@pytest.mark.large
def test_quick_run_learns(load_example):
    # 256 tokens in chunks of 64, 128 steps: ~1 minute on 2 CPU cores.
    assert load_example(EXAMPLE).main(["--quick"]) > 0.9
