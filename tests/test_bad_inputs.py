"""The bad-input table: every wrong input gets an error naming the problem."""

import json
import os
import time

import numpy as np
import pytest

from keras_mega.models import MegaBackbone


def tiny(**kwargs):
    config = dict(
        vocabulary_size=20,
        num_layers=1,
        hidden_dim=8,
        intermediate_dim=8,
        shared_dim=4,
        ema_dim=2,
        max_sequence_length=16,
    )
    return MegaBackbone(**{**config, **kwargs})


def _inputs(ids):
    ids = np.asarray(ids, "int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


@pytest.mark.parametrize("bad_id", [20, 1000, -1])
@pytest.mark.parametrize("entry", ["call", "predict", "fit"])
def test_token_ids_out_of_range(bad_id, entry):
    backbone = tiny()
    inputs = _inputs([[3, 4, bad_id, 5]])
    with pytest.raises(ValueError, match=rf"Token id {bad_id} .*20 ids"):
        if entry == "call":
            backbone(inputs)
        elif entry == "predict":
            backbone.predict(inputs, verbose=0)
        else:
            backbone.compile(loss="mse")
            backbone.fit(inputs, np.zeros((1, 4, 8)), verbose=0)


def test_sequence_longer_than_simple_bias():
    backbone = tiny(relative_position_bias="simple")
    with pytest.raises(ValueError, match=r"\b16\b.*max_sequence_length"):
        backbone(_inputs(np.full((1, 17), 3)))


def test_simple_bias_with_chunks_accepts_any_length():
    backbone = tiny(relative_position_bias="simple", chunk_size=8)
    out = backbone(_inputs(np.full((1, 40), 3)))
    assert out.shape == (1, 40, 8)


@pytest.mark.parametrize("option", ["chunk_size", "truncation"])
@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_non_positive_chunk_or_truncation(option, value):
    with pytest.raises(ValueError, match=option):
        tiny(**{option: value})


def test_preset_of_newer_format_is_refused(tmp_path):
    backbone = tiny()
    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    with open(os.path.join(preset, "keras_mega.json")) as f:
        assert json.load(f)["format_version"] == 1
    with open(os.path.join(preset, "keras_mega.json"), "w") as f:
        json.dump({"format_version": 99, "keras_mega_version": "9.0"}, f)
    import keras_hub

    for loader in (MegaBackbone, keras_hub.models.Backbone):
        with pytest.raises(ValueError, match="format 99.*Upgrade keras-mega"):
            loader.from_preset(preset)


def test_failed_save_leaves_old_preset_and_no_partial(tmp_path, monkeypatch):
    preset = tmp_path / "preset"
    first = tiny()
    first.save_to_preset(str(preset))
    before = sorted(os.listdir(preset))

    def broken_save(self, preset_dir, *args, **kwargs):
        with open(os.path.join(preset_dir, "config.json"), "w") as f:
            f.write("{half")
        raise KeyboardInterrupt

    from keras_hub.models import Backbone

    monkeypatch.setattr(Backbone, "save_to_preset", broken_save)
    with pytest.raises(KeyboardInterrupt):
        tiny().save_to_preset(str(preset))
    assert sorted(os.listdir(preset)) == before
    assert [p for p in os.listdir(tmp_path) if p != "preset"] == []
    MegaBackbone.from_preset(str(preset))  # still loads


def test_offline_remote_handle_fails_fast_in_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # An empty Hugging Face cache, offline (constants: read at import).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.time()
    for preset in ("hf://mnaylor/mega-base-wikitext", "mega_base_wikitext"):
        with pytest.raises(ConnectionError) as info:
            MegaBackbone.from_preset(preset)
        assert "\n" not in str(info.value)
        assert "hf://mnaylor/mega-base-wikitext is not in the Hugging" in str(
            info.value
        )
        assert "from_preset('DIR')" in str(info.value)
    assert time.time() - start < 5


def test_bad_hf_handle_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="form 'hf://owner/name'"):
        MegaBackbone.from_preset("hf://not a/valid//name")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MegaBackbone.from_preset(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a directory"):
        MegaBackbone.from_preset(str(tmp_path / "file.txt"))


def test_named_preset_is_registered_with_keras_hub():
    import keras_hub

    assert "mega_base_wikitext" in MegaBackbone.presets
    assert "mega_base_wikitext" in keras_hub.models.Backbone.presets


def test_named_preset_matches_the_documented_hf_config():
    transformers = pytest.importorskip("transformers")
    from keras_mega.convert.hf import convert_backbone_config
    from keras_mega.models.mega_presets import MEGA_BASE_WIKITEXT_HF_CONFIG
    from keras_mega.models.mega_presets import backbone_presets

    documented = MEGA_BASE_WIKITEXT_HF_CONFIG
    defaults = transformers.MegaConfig()
    differ = {k for k, v in documented.items() if getattr(defaults, k) != v}
    assert differ == {"vocab_size", "max_positions"}
    config = transformers.MegaConfig(**documented)
    backbone = MegaBackbone(**convert_backbone_config(config.to_dict()))
    metadata = backbone_presets["mega_base_wikitext"]["metadata"]
    assert backbone.count_params() == metadata["params"]
    for fact in (
        "hidden 128",
        "4-layer",
        "intermediate 256",
        "EMA 16",
        "50265",
    ):
        assert fact in metadata["description"]
