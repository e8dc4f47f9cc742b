"""Model and data parallelism with `keras.distribution`, on 4 simulated CPU
devices (JAX). The run happens in a subprocess: the device count is fixed
when JAX starts."""

import keras
import pytest
from mega_fixtures import run_reporting

from keras_mega.models import MegaBackbone

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution shards variables on the JAX backend",
)

SCRIPT = r"""
import json
import keras
import numpy as np
from keras_mega.models import MegaBackbone

config = dict(
    vocabulary_size=64, num_layers=2, hidden_dim=16, intermediate_dim=32,
    shared_dim=8, ema_dim=4, ffn_dim=32, chunk_size=8, dropout=0.0,
    hidden_dropout=0.0, attention_dropout=0.0, ffn_activation_dropout=0.0,
)
rng = np.random.default_rng(0)
ids = rng.integers(3, 64, (4, 24)).astype("int32")
inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
target = rng.normal(size=(4, 24, 16)).astype("float32")


def train_step(model):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(inputs, target, batch_size=4, epochs=1, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


keras.utils.set_random_seed(0)
reference = MegaBackbone(**config)
weights = reference.get_weights()
expected = reference.predict(inputs, verbose=0)
expected_trained = train_step(reference)

devices = keras.distribution.list_devices("cpu")
mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
model_parallel = keras.distribution.ModelParallel(
    layout_map=MegaBackbone.get_layout_map(mesh), batch_dim_name="batch"
)
with model_parallel.scope():
    sharded = MegaBackbone(**config)
    sharded.set_weights(weights)
    predicted = sharded.predict(inputs, verbose=0)
    trained = train_step(sharded)
specs = {
    v.path: str(tuple(v.value.sharding.spec))
    for v in sharded.weights
    if v.path.startswith(("token_embedding", "mega_layer_0/"))
}

with keras.distribution.DataParallel(devices=devices).scope():
    replicated = MegaBackbone(**config)
    replicated.set_weights(weights)
    data_trained = train_step(replicated)

print("RESULT " + json.dumps({
    "devices": len(devices),
    "predict": float(np.abs(predicted - expected).max()),
    "model_parallel_step": max_diff(trained, expected_trained),
    "data_parallel_step": max_diff(data_trained, expected_trained),
    "moved": max_diff(expected_trained, weights),
    "specs": specs,
}))
"""


@pytest.fixture(scope="module")
def result():
    return run_reporting(
        SCRIPT,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )


def test_layout_map_shards_projections_on_the_model_axis(result):
    assert result["devices"] == 4
    specs = result["specs"]
    assert specs["token_embedding/embeddings"] == "('model', 'batch')"
    for name in ("mega_layer/v_proj", "mega_layer/mx_proj", "nffn/fc1"):
        assert specs[f"mega_layer_0/{name}/kernel"] == "('batch', 'model')"
    for name in ("mega_layer/h_proj", "nffn/fc2"):
        assert specs[f"mega_layer_0/{name}/kernel"] == "('model', 'batch')"
    ema = "mega_layer_0/mega_layer/ema_gate/damping_factor"
    assert specs[ema] in ("()", "(None, None)")


def test_model_parallel_predict_and_fit_equal_one_device(result):
    assert result["predict"] < 1e-5
    assert result["moved"] > 1e-3  # the step changed the weights
    assert result["model_parallel_step"] < 1e-5


def test_data_parallel_fit_equals_one_device(result):
    assert result["data_parallel_step"] < 1e-5


def test_layout_map_checks_the_mesh():
    with pytest.raises(ValueError, match="DeviceMesh"):
        MegaBackbone.get_layout_map("not a mesh")
    mesh = keras.distribution.DeviceMesh(
        (1,), ["data"], keras.distribution.list_devices()[:1]
    )
    with pytest.raises(ValueError, match="'model'"):
        MegaBackbone.get_layout_map(mesh)
