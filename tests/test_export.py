"""Export for serving: the exported SavedModel computes what Keras computes."""

import os

import keras
import numpy as np
import pytest

from keras_mega.models import MegaBackbone

BACKEND = keras.backend.backend()


def _backbone():
    return MegaBackbone(
        vocabulary_size=20,
        num_layers=1,
        hidden_dim=8,
        intermediate_dim=8,
        shared_dim=4,
        ema_dim=2,
        chunk_size=4,
    )


def _inputs(batch, length, seed):
    ids = (
        np.random.default_rng(seed)
        .integers(3, 20, (batch, length))
        .astype("int32")
    )
    mask = np.ones_like(ids)
    mask[0, length - 2 :] = 0
    return {"token_ids": ids, "padding_mask": mask}


@pytest.mark.skipif(
    BACKEND == "torch", reason="Keras cannot export dict inputs on torch"
)
def test_saved_model_round_trip(tmp_path):
    tf = pytest.importorskip("tensorflow")
    backbone = _backbone()
    path = os.path.join(tmp_path, "saved_model")
    backbone.export(path, sequence_length=10)
    served = tf.saved_model.load(path)
    shapes = [(2, 10), (3, 10)] if BACKEND == "jax" else [(2, 10), (3, 13)]
    for seed, (batch, length) in enumerate(shapes):
        inputs = _inputs(batch, length, seed)
        expected = keras.ops.convert_to_numpy(backbone(inputs))
        actual = np.asarray(served.serve(inputs))
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_unsupported_exports_say_why(tmp_path):
    backbone = _backbone()
    with pytest.raises(ValueError, match="ONNX"):
        backbone.export(str(tmp_path / "m.onnx"), format="onnx")
    if BACKEND == "torch":
        with pytest.raises(ValueError, match="torch backend"):
            backbone.export(str(tmp_path / "sm"))
    if BACKEND == "jax":
        with pytest.raises(ValueError, match="sequence_length"):
            backbone.export(str(tmp_path / "sm"))
