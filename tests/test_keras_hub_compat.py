"""The private keras-hub hooks keras-mega relies on, one test per hook.

A keras-hub release that renames, moves or reshapes one of them fails the
test named after it, instead of somewhere deep in a `from_preset` or a
`generate()` call. The README section "keras-hub compatibility" lists the
hooks and the keras-hub versions these tests passed with.
"""

import inspect
import json

import keras
import keras_hub
import numpy as np
import pytest
from keras_hub.src.utils import preset_utils
from keras_hub.src.utils import tensor_utils
from keras_hub.src.utils.transformers import preset_loader

import keras_mega  # registers the loaders
from keras_mega import keras_hub_compat as compat
from keras_mega.models import MegaBackbone
from keras_mega.models import MegaTokenizer

# A tiny HF MegaConfig (HF option names).
TINY_HF_CONFIG = {
    "model_type": "mega",
    "architectures": ["MegaModel"],
    "vocab_size": 40,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "intermediate_size": 24,
    "ema_projection_size": 4,
    "shared_representation_size": 8,
    "nffn_hidden_size": 20,
    "max_positions": 64,
}
VOCAB = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
VOCAB.update({"a": 5, "Ġ": 6, "q": 7, "u": 8, "i": 9, "c": 10, "k": 11})
VOCAB.update({"Ġq": 12, "uick": 13, "Ġquick": 14, "ui": 15, "ck": 16})
MERGES = ["Ġ q", "u i", "c k", "ui ck", "Ġq uick"]


def params(fn):
    return list(inspect.signature(fn).parameters)


def write_json(path, obj):
    path.write_text(json.dumps(obj))


@pytest.fixture
def hf_dir(tmp_path):
    write_json(tmp_path / "config.json", TINY_HF_CONFIG)
    write_json(tmp_path / "vocab.json", VOCAB)
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(MERGES) + "\n"
    )
    return str(tmp_path)


def test_every_hook_is_as_expected():
    # Summary of the tests below; names the hooks that changed.
    assert compat.hook_problems() == {}, keras_hub.__version__


def test_every_hook_is_documented_and_checked():
    assert set(compat._hook_checks(dispatch=False)) == set(compat.HOOKS)


# --- preset_utils helpers ---


def test_get_file_resolves_local_files(tmp_path):
    assert params(preset_utils.get_file)[:2] == ["preset", "path"]
    (tmp_path / "a.json").write_text("{}")
    assert compat.get_file is preset_utils.get_file
    assert compat.get_file(str(tmp_path), "a.json") == str(tmp_path / "a.json")


def test_get_file_raises_file_not_found_for_missing_files(tmp_path):
    # `check_file_exists` and keras-mega's optional files rely on exactly
    # FileNotFoundError (not ValueError) for a file a preset lacks.
    with pytest.raises(FileNotFoundError):
        preset_utils.get_file(str(tmp_path), "missing.json")


def test_get_file_resolves_registered_preset_names():
    # A registered name stands for its handle (hf://...); get_file maps it
    # before looking at the scheme.
    assert "mega_base_wikitext" in preset_utils.BUILTIN_PRESETS
    handle = preset_utils.BUILTIN_PRESETS["mega_base_wikitext"]
    assert handle["kaggle_handle"].startswith("hf://")


def test_check_file_exists_is_a_bool_not_an_error(tmp_path):
    assert params(preset_utils.check_file_exists)[:2] == ["preset", "path"]
    (tmp_path / "vocab.json").write_text("{}")
    assert compat.check_file_exists(str(tmp_path), "vocab.json") is True
    assert compat.check_file_exists(str(tmp_path), "merges.txt") is False


def test_load_json_reads_a_preset_json(tmp_path):
    assert params(preset_utils.load_json)[:2] == ["preset", "config_file"]
    write_json(tmp_path / "task.json", {"registered_name": "x"})
    assert compat.load_json(str(tmp_path), "task.json") == {
        "registered_name": "x"
    }


def test_register_presets_lists_mega_presets():
    assert params(preset_utils.register_presets)[:2] == [
        "presets",
        "backbone_cls",
    ]
    assert "mega_base_wikitext" in MegaBackbone.presets
    assert "mega_base_wikitext" in keras_hub.models.Backbone.presets


def test_register_presets_fallback_writes_the_same_registry():
    presets = {"mega_compat_probe": {"metadata": {}, "kaggle_handle": "x"}}
    try:
        compat._fallback_register_presets(presets, MegaBackbone)
        assert "mega_compat_probe" in MegaBackbone.presets
    finally:
        preset_utils.BUILTIN_PRESETS.pop("mega_compat_probe", None)
        preset_utils.BUILTIN_PRESETS_FOR_BACKBONE[MegaBackbone].pop(
            "mega_compat_probe", None
        )


# --- tensor_utils ---


def test_any_equal_marks_stop_tokens_inside_the_mask():
    assert params(tensor_utils.any_equal) == [
        "inputs",
        "values",
        "padding_mask",
    ]
    inputs = np.array([[5, 2, 7, 2], [2, 9, 9, 1]], "int32")
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], "bool")
    expected = [[False, True, False, False], [False, False, False, True]]
    for fn in (compat.any_equal, compat._fallback_any_equal):
        out = keras.ops.convert_to_numpy(fn(inputs, [2, 1], mask))
        assert out.tolist() == expected


# --- Loader classes ---


@pytest.mark.parametrize(
    "name", ["PresetLoader", "KerasPresetLoader", "TransformersPresetLoader"]
)
def test_loader_class_methods(name):
    transformers = name == "TransformersPresetLoader"
    module = preset_loader if transformers else preset_utils
    cls = getattr(module, name)
    original = getattr(cls, "_keras_mega_original", cls)
    assert issubclass(original, preset_utils.PresetLoader)
    assert params(original.__init__)[:3] == ["self", "preset", "config"]
    assert params(original.load_backbone)[:3] == ["self", "cls", "load_weights"]
    assert params(original.load_task)[:4] == [
        "self",
        "cls",
        "load_weights",
        "load_task_weights",
    ]
    assert params(original.load_tokenizer)[:2] == ["self", "cls"]
    assert params(original.load_preprocessor)[:2] == ["self", "cls"]


def test_preset_loader_init_sets_preset_and_config():
    loader = preset_utils.PresetLoader("some/dir", {"a": 1})
    assert loader.preset == "some/dir" and loader.config == {"a": 1}


def test_preset_loader_get_backbone_kwargs_splits_off_dtype():
    # MegaAwareKerasPresetLoader overrides it: keras-hub passes
    # `dtype=None` on when none is given, and the Keras loader's
    # `load_backbone` / `load_task` take the backbone's options from it.
    loader = preset_utils.PresetLoader("some/dir", {})
    backbone_kwargs, kwargs = loader.get_backbone_kwargs(
        dtype="bfloat16", num_classes=3
    )
    assert backbone_kwargs == {"dtype": "bfloat16"}
    assert kwargs == {"num_classes": 3}
    backbone_kwargs, _ = loader.get_backbone_kwargs()
    assert "dtype" in backbone_kwargs and backbone_kwargs["dtype"] is None
    for method in ("load_backbone", "load_task"):
        source = inspect.getsource(getattr(compat._OriginalKerasLoader, method))
        assert "self.get_backbone_kwargs(" in source, method


def test_transformers_preset_loader_is_rebound():
    assert (
        preset_loader.TransformersPresetLoader
        is compat.MegaAwareTransformersPresetLoader
    )
    original = compat.MegaAwareTransformersPresetLoader._keras_mega_original
    assert original.__module__ == preset_loader.__name__


def test_transformers_preset_loader_refuses_unknown_model_types():
    # keras-mega relies on keras-hub's `__init__` picking `self.converter`
    # from `model_type`, and refusing "mega" (else keras-hub converts Mega
    # itself and keras-mega's converter should be checked against it).
    original = compat.MegaAwareTransformersPresetLoader._keras_mega_original
    with pytest.raises(ValueError):
        original("some/dir", {"model_type": "mega"})
    bert = compat.MegaAwareTransformersPresetLoader(
        "some/dir", {"model_type": "bert"}
    )
    assert not bert.is_mega
    assert bert.converter.__name__.endswith("convert_bert")


def test_keras_preset_loader_is_rebound():
    assert preset_utils.KerasPresetLoader is compat.MegaAwareKerasPresetLoader


def test_get_preset_loader_hands_out_the_rebound_loaders(hf_dir, tmp_path):
    loader = preset_utils.get_preset_loader(hf_dir)
    assert isinstance(loader, compat.MegaAwareTransformersPresetLoader)
    assert loader.is_mega and loader.check_backbone_class() is MegaBackbone
    keras_dir = tmp_path / "keras"
    keras_dir.mkdir()
    write_json(
        keras_dir / "config.json",
        {"registered_name": "keras_mega>MegaBackbone", "config": {}},
    )
    write_json(keras_dir / "keras_mega.json", {"format_version": 10**6})
    with pytest.raises(ValueError, match="newer|Upgrade keras-mega"):
        preset_utils.get_preset_loader(str(keras_dir))


def test_public_from_preset_reads_hf_mega_directories(hf_dir):
    # Through keras-hub's public classes: the loader hook is reached.
    backbone = keras_hub.models.Backbone.from_preset(hf_dir, load_weights=False)
    assert isinstance(backbone, MegaBackbone)
    assert backbone.hidden_dim == 16
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(hf_dir)
    assert isinstance(tokenizer, MegaTokenizer)
    assert np.asarray(tokenizer("a quick")).tolist() == [5, 14]


def test_inherited_hf_loader_methods_work_for_mega(hf_dir):
    # The HF loader's methods keras-mega does not override look for optional
    # converter functions with `hasattr`; keras-mega's converter has none.
    loader = preset_utils.get_preset_loader(hf_dir)
    assert loader.load_image_converter(None) is None
    assert loader.load_audio_converter(None) is None
    preprocessor = keras_mega.models.MegaTextClassifierPreprocessor
    assert callable(preprocessor._add_missing_kwargs)
    out = loader.load_preprocessor(preprocessor)
    assert isinstance(out.tokenizer, MegaTokenizer)


def test_missing_loader_hooks_warn_instead_of_breaking_import(monkeypatch):
    monkeypatch.setattr(compat, "_HAS_HF_HOOKS", False)
    monkeypatch.setattr(
        compat,
        "_PROBLEMS",
        {"transformers.preset_loader.TransformersPresetLoader": "missing"},
    )
    # Only the Keras loader is (re)bound; the HF one stays as it is.
    monkeypatch.setattr(
        preset_loader,
        "TransformersPresetLoader",
        compat._OriginalLoader,
        raising=False,
    )
    with pytest.warns(UserWarning, match="TransformersPresetLoader: missing"):
        assert compat.register_hf_mega_loader() is False
    assert preset_loader.TransformersPresetLoader is compat._OriginalLoader
    assert preset_utils.KerasPresetLoader is compat.MegaAwareKerasPresetLoader


def test_fallback_helpers_read_local_directories(tmp_path):
    write_json(tmp_path / "config.json", {"a": 1})
    preset = str(tmp_path)
    assert compat._fallback_get_file(preset, "config.json").endswith(
        "config.json"
    )
    with pytest.raises(FileNotFoundError):
        compat._fallback_get_file(preset, "missing.json")
    with pytest.raises(ValueError, match="local preset directories"):
        compat._fallback_get_file("hf://a/b", "config.json")
    assert compat._fallback_check_file_exists(preset, "config.json")
    assert compat._fallback_load_json(preset) == {"a": 1}


# --- Hooks used outside keras_hub_compat ---


def test_byte_pair_tokenizer_private_methods():
    # keras_mega/models/mega_tokenizer.py overrides or calls these.
    bpe = keras_hub.tokenizers.BytePairTokenizer
    assert params(bpe._set_vocabulary_and_merges_tokenizers) == [
        "self",
        "vocabulary",
        "merges",
    ]
    for name in (
        "_check_vocabulary",
        "_maybe_initialized_tokenizers",
        "_tokenize_tokenizers",
        "_add_special_token",
    ):
        assert callable(getattr(bpe, name, None)), name
    assert params(bpe._add_special_token) == ["self", "token", "name"]
    tokenizer = MegaTokenizer(vocabulary=VOCAB, merges=MERGES)
    tokenizer._maybe_initialized_tokenizers()
    # An HF `tokenizers.Tokenizer`, whose pre-tokenizer MegaTokenizer swaps.
    tokenizers = pytest.importorskip("tokenizers")
    assert isinstance(tokenizer._tokenizer, tokenizers.Tokenizer)
    assert tokenizer.start_token_id == 0 and tokenizer.mask_token_id == 4


def test_sampler_call_contract():
    # MegaCausalLM.generate_step calls the sampler with these arguments,
    # and `next(prompt, cache, index)` returning (logits, hidden, cache).
    names = params(keras_hub.samplers.Sampler.__call__)
    for name in (
        "next",
        "prompt",
        "cache",
        "index",
        "mask",
        "stop_token_ids",
        "hidden_states",
        "model",
    ):
        assert name in names, name
