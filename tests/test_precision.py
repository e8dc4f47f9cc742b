"""Mixed precision (EMA, FFT-free convolution and softmax stay float32) and
compiled training."""

import keras
import numpy as np
import pytest
from mega_fixtures import assert_close

from keras_mega.models import MegaBackbone

POLICIES = ["mixed_bfloat16", "mixed_float16"]
JIT = keras.backend.backend() != "torch"


def small(**kwargs):
    config = dict(
        vocabulary_size=50,
        num_layers=2,
        hidden_dim=16,
        intermediate_dim=32,
        shared_dim=8,
        ema_dim=4,
        ffn_dim=32,
        chunk_size=128,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )
    return MegaBackbone(**{**config, **kwargs})


def _inputs(length, batch_size=1, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 50, (batch_size, length)).astype("int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def _numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


@pytest.mark.parametrize("policy", POLICIES)
def test_long_sequence_forward_stays_finite(policy):
    keras.config.set_dtype_policy(policy)
    backbone = small()
    for variable in backbone.weights:  # large activations
        if "embeddings" in variable.path:
            variable.assign(variable * 500.0)
    out = _numpy(backbone(_inputs(16384)))
    assert np.isfinite(out).all()
    ema = backbone.mega_layers[0].mega_layer.ema_gate
    assert (
        keras.backend.standardize_dtype(ema.damping_factor.dtype) == "float32"
    )
    assert keras.backend.standardize_dtype(ema.kernel(8).dtype) == "float32"


@pytest.mark.parametrize("policy", POLICIES)
def test_training_step_at_16k_stays_finite(policy):
    keras.config.set_dtype_policy(policy)
    backbone = small()
    before = [_numpy(w) for w in backbone.trainable_weights]
    backbone.compile(
        optimizer=keras.optimizers.AdamW(1e-3), loss="mse", jit_compile=JIT
    )
    target = np.ones((1, 16384, 16), "float32")
    loss = backbone.train_on_batch(_inputs(16384), target)
    after = [_numpy(w) for w in backbone.trainable_weights]
    assert np.isfinite(loss)
    assert all(np.isfinite(w).all() for w in after)
    assert max(np.abs(a - b).max() for a, b in zip(after, before)) > 0


@pytest.mark.parametrize("policy", POLICIES)
def test_mixed_precision_is_close_to_float32(policy):
    reference = small(chunk_size=64)
    inputs = _inputs(512, batch_size=2)
    expected = _numpy(reference(inputs))
    keras.config.set_dtype_policy(policy)
    mixed = small(chunk_size=64)
    mixed.set_weights(reference.get_weights())
    features = mixed.feature_extractor(output_attentions=True)(inputs)
    # bfloat16 keeps 8 bits of mantissa: a few percent through two layers.
    assert_close(_numpy(mixed(inputs)), expected, rtol=5e-2)
    assert keras.backend.standardize_dtype(features["attentions"][0].dtype) == (
        "float32"
    )


@pytest.mark.skipif(not JIT, reason="XLA compilation: JAX and TensorFlow")
def test_compiled_training_equals_eager():
    inputs, target = _inputs(40, batch_size=2), np.ones((2, 40, 16), "float32")
    weights = None
    trained = []
    for jit in (True, False):
        backbone = small(chunk_size=16)
        if weights is None:
            weights = backbone.get_weights()
        backbone.set_weights(weights)
        backbone.compile(
            optimizer=keras.optimizers.SGD(0.5), loss="mse", jit_compile=jit
        )
        backbone.fit(inputs, target, batch_size=2, epochs=2, verbose=0)
        trained.append(backbone.get_weights())
    for compiled, eager in zip(*trained):
        assert_close(compiled, eager)
    assert max(np.abs(a - b).max() for a, b in zip(trained[0], weights)) > 1e-3
