import importlib.util
import os

import keras
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_addoption(parser):
    parser.addoption(
        "--run-large",
        action="store_true",
        default=False,
        help="run tests marked large (slow experiments)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large test: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="module")
def quick_jax_compiles():
    """XLA without most optimizations on JAX: tiny models compile about
    twice as fast, and compiling is most of such tests' time. Use with
    `pytestmark = pytest.mark.usefixtures("quick_jax_compiles")`."""
    if keras.config.backend() != "jax":
        yield
        return
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for torch while an example runs.

    The suite runs the three backends side by side on a 2-core machine;
    torch's two OpenMP threads then wait on each other: the demo's smoke run
    took 252 s with two threads and 16 s with one. Results do not depend on
    it.
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


@pytest.fixture
def load_example(monkeypatch):
    """`load_example("demo.py")`: that example's module, loaded from
    examples/ (on `sys.path` for the test, as when the example runs as a
    script: examples import `example_utils` from there)."""
    monkeypatch.syspath_prepend(EXAMPLES)

    def load(name):
        path = os.path.join(EXAMPLES, name)
        spec = importlib.util.spec_from_file_location(name[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
