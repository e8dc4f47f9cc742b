"""MegaBackbone: saving, loading, compiled execution and loader errors."""

import json
import os

import keras
import numpy as np
import pytest
from mega_fixtures import make_hf_model
from mega_fixtures import random_batch

from keras_mega.models import MegaBackbone


def tiny_backbone(**kwargs):
    config = dict(
        vocabulary_size=48,
        num_layers=2,
        hidden_dim=16,
        intermediate_dim=24,
        shared_dim=8,
        ema_dim=4,
        ffn_dim=20,
        chunk_size=4,
        max_sequence_length=32,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )
    return MegaBackbone(**{**config, **kwargs})


def _inputs(length=11, lengths=(11, 7)):
    ids, mask = random_batch(2, length, lengths=list(lengths))
    return {"token_ids": ids, "padding_mask": mask}


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(
            causal=True,
            bidirectional=False,
            relative_position_bias="simple",
            normalization_type="batchnorm",
            num_segments=2,
        ),
    ],
    ids=["encoder", "decoder"],
)
def test_save_and_load_are_bit_exact(kwargs, tmp_path):
    backbone = tiny_backbone(**kwargs)
    inputs = _inputs()
    if backbone.num_segments:
        inputs["segment_ids"] = np.zeros_like(inputs["token_ids"])
    expected = _np(backbone(inputs))

    path = str(tmp_path / "model.keras")
    backbone.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(_np(restored(inputs)), expected)

    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    reloaded = MegaBackbone.from_preset(preset)
    assert reloaded.get_config() == backbone.get_config()
    np.testing.assert_array_equal(_np(reloaded(inputs)), expected)


def test_compiled_predict_equals_eager():
    backbone = tiny_backbone()
    inputs = _inputs()
    eager = _np(backbone(inputs))
    backbone.compile(jit_compile=keras.backend.backend() != "torch")
    np.testing.assert_allclose(
        backbone.predict(inputs, verbose=0), eager, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("length", [1, 3, 4, 13])
def test_any_length_with_chunking_is_finite(length):
    backbone = tiny_backbone(causal=True, bidirectional=False)
    ids, mask = random_batch(2, length)
    mask[1, :] = 0  # a row that is all padding
    out = _np(backbone({"token_ids": ids, "padding_mask": mask}))
    assert out.shape == (2, length, 16)
    assert np.isfinite(out).all()


def test_outputs_do_not_depend_on_padding_content():
    backbone = tiny_backbone()
    inputs = _inputs()
    other = {k: v.copy() for k, v in inputs.items()}
    other["token_ids"][1, 7:] = 5  # different ids under the padding
    a, b = _np(backbone(inputs)), _np(backbone(other))
    np.testing.assert_allclose(a[1, :7], b[1, :7], atol=1e-6)


def test_cross_attention_needs_a_decoder():
    with pytest.raises(ValueError, match="causal=True"):
        tiny_backbone(cross_attention=True)


# --- Loading HF checkpoints: every broken input gets a clear error ---


def _edit_config(path, **changes):
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.update(changes)
    with open(config_path, "w") as f:
        json.dump(config, f)


def test_config_of_another_model_type(tmp_path):
    make_hf_model(tmp_path)
    _edit_config(tmp_path, model_type="bert_mega_typo")
    with pytest.raises(ValueError, match="bert_mega_typo"):
        MegaBackbone.from_preset(str(tmp_path))


def test_unknown_normalization_type_in_checkpoint(tmp_path):
    make_hf_model(tmp_path)
    _edit_config(tmp_path, normalization_type="groupnorm")
    with pytest.raises(ValueError, match="normalization_type"):
        MegaBackbone.from_preset(str(tmp_path))


def test_unknown_attention_kind_in_checkpoint(tmp_path):
    make_hf_model(tmp_path)
    _edit_config(tmp_path, attention_activation="sparsemax")
    with pytest.raises(ValueError, match="attention_activation"):
        MegaBackbone.from_preset(str(tmp_path))


def test_chunking_without_chunk_size(tmp_path):
    make_hf_model(tmp_path)
    _edit_config(tmp_path, use_chunking=True, chunk_size=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        MegaBackbone.from_preset(str(tmp_path))


def _rewrite_weights(path, edit):
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    file = os.path.join(path, "model.safetensors")
    weights = load_file(file)
    edit(weights)
    save_file(weights, file)


def test_missing_weight_is_named(tmp_path):
    make_hf_model(tmp_path)
    key = "layers.1.nffn.fc2.bias"
    _rewrite_weights(tmp_path, lambda w: w.pop(key))
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        MegaBackbone.from_preset(str(tmp_path))


def test_extra_weight_is_named(tmp_path):
    make_hf_model(tmp_path)
    key = "layers.2.nffn.fc2.bias"  # a third layer the config does not have

    def add(weights):
        weights[key] = np.zeros(16, "float32")

    _rewrite_weights(tmp_path, add)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        MegaBackbone.from_preset(str(tmp_path))


def test_wrong_shape_names_weight_and_both_shapes(tmp_path):
    make_hf_model(tmp_path)
    key = "layers.0.mega_layer.v_proj.weight"

    def reshape(weights):
        weights[key] = np.zeros((25, 16), "float32")

    _rewrite_weights(tmp_path, reshape)
    with pytest.raises(
        ValueError, match=r"v_proj\.weight.*\(25, 16\).*\(16, 24\)"
    ):
        MegaBackbone.from_preset(str(tmp_path))


def test_truncated_weight_file(tmp_path):
    make_hf_model(tmp_path)
    file = tmp_path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        MegaBackbone.from_preset(str(tmp_path))


def test_no_weight_file(tmp_path):
    make_hf_model(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MegaBackbone.from_preset(str(tmp_path))
