"""Trained heads and label names, hub loading through huggingface_hub's
cache, preset metadata, the kwargs of `from_preset`, and label checks in
`fit`/`evaluate`.

Numbers are checked against HF's own logits (tiny checkpoints saved here)
or bit-exactly against the model that was saved. Nothing touches the
network: `hf://` handles read a Hugging Face cache laid out in `tmp_path`.
"""

import json
import os
import warnings

import h5py
import keras
import numpy as np
import pytest
from mega_fixtures import assert_close
from mega_fixtures import make_hf_model
from mega_fixtures import random_batch

import keras_mega  # registers the HF Mega loader
from keras_mega.models import MegaBackbone
from keras_mega.models import MegaMultipleChoice
from keras_mega.models import MegaQuestionAnswerer
from keras_mega.models import MegaTextClassifier
from keras_mega.models import MegaTokenClassifier

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

# The compiles of these tests are most of their time (conftest).
pytestmark = pytest.mark.usefixtures("quick_jax_compiles")

NAMES = {0: "negative", 1: "neutral", 2: "positive"}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}
REVISION = "0123456789abcdef0123456789abcdef01234567"


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).logits.numpy()


@pytest.fixture(scope="module")
def batch():
    ids, mask = random_batch(2, 8, lengths=[8, 5])
    return {"token_ids": ids, "padding_mask": mask}


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """An HF MegaForSequenceClassification with 3 named labels."""
    path = tmp_path_factory.mktemp("hf_classifier")
    hf = make_hf_model(
        path, cls="MegaForSequenceClassification", num_labels=3,
        id2label=NAMES, label2id={v: k for k, v in NAMES.items()},
    )  # fmt: skip
    return path, hf


def recorded(fn):
    """`fn()` and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


def head_warnings(messages):
    return [m for m in messages if "head" in m or "optimizer" in m]


# --- Heads: a num_classes equal to the checkpoint's keeps the trained head


@pytest.mark.parametrize("entry", ["mega", "keras_hub"])
def test_equal_num_classes_keeps_the_trained_head(classifier_dir, batch, entry):
    import keras_hub

    path, hf = classifier_dir
    loader = {
        "mega": MegaTextClassifier, "keras_hub": keras_hub.models.TextClassifier
    }[entry]  # fmt: skip
    task, messages = recorded(
        lambda: loader.from_preset(str(path), num_classes=3, preprocessor=None)
    )
    assert head_warnings(messages) == []
    assert isinstance(task, MegaTextClassifier) and task.num_classes == 3
    expected = hf_logits(hf, batch["token_ids"], batch["padding_mask"])
    assert_close(task(batch), expected)
    assert task.id2label == NAMES
    assert task.label2id == {"negative": 0, "neutral": 1, "positive": 2}


def test_other_num_classes_warns_naming_both_counts(classifier_dir, batch):
    path, hf = classifier_dir
    with pytest.warns(
        UserWarning, match=r"head for 3 labels, but num_classes=5"
    ):
        task = MegaTextClassifier.from_preset(
            str(path), num_classes=5, preprocessor=None
        )
    assert task.num_classes == 5 and task.id2label is None
    assert task(batch).shape == (2, 5)
    # The backbone keeps the checkpoint's weights; the head is new.
    state = hf.state_dict()
    np.testing.assert_array_equal(
        numpy(task.backbone.token_embedding.embeddings),
        state["mega.embedding_layer.word_embeddings.weight"].numpy(),
    )
    assert numpy(task.output_dense.kernel).shape == (16, 5)


def test_token_classifier_label_names_and_equal_count(tmp_path, batch):
    hf = make_hf_model(
        tmp_path, cls="MegaForTokenClassification", num_labels=4,
        id2label=TAGS,
    )  # fmt: skip
    task, messages = recorded(
        lambda: MegaTokenClassifier.from_preset(
            str(tmp_path), num_classes=4, preprocessor=None
        )
    )
    assert head_warnings(messages) == []
    assert task.id2label == TAGS and task.label2id["B-LOC"] == 3
    expected = hf_logits(hf, batch["token_ids"], batch["padding_mask"])
    assert_close(task(batch), expected, mask=batch["padding_mask"])
    # Label names survive a preset, and so do the outputs, bit-exactly.
    task.save_to_preset(str(tmp_path / "preset"))
    with open(tmp_path / "preset" / "task.json") as f:
        assert json.load(f)["config"]["id2label"] == {
            str(k): v for k, v in TAGS.items()
        }
    reloaded = MegaTokenClassifier.from_preset(str(tmp_path / "preset"))
    assert reloaded.id2label == TAGS
    np.testing.assert_array_equal(numpy(reloaded(batch)), numpy(task(batch)))


def test_keras_preset_num_classes_keeps_or_warns(
    classifier_dir, tmp_path, batch
):
    path, _ = classifier_dir
    task = MegaTextClassifier.from_preset(str(path), preprocessor=None)
    preset = str(tmp_path / "preset")
    task.save_to_preset(preset)
    expected = numpy(task(batch))

    same, messages = recorded(
        lambda: MegaTextClassifier.from_preset(preset, num_classes=3)
    )
    assert head_warnings(messages) == []
    assert same.id2label == NAMES
    np.testing.assert_array_equal(numpy(same(batch)), expected)

    with pytest.warns(
        UserWarning, match=r"head for 3 labels, but num_classes=2"
    ):
        other = MegaTextClassifier.from_preset(preset, num_classes=2)
    assert other.num_classes == 2 and other.id2label is None
    np.testing.assert_array_equal(
        numpy(other.backbone(batch)), numpy(task.backbone(batch))
    )


def test_id2label_is_checked(batch):
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match=r"ids \[0, 1\] but num_classes=3"):
        MegaTextClassifier(backbone, num_classes=3, id2label=["a", "b"])
    task = MegaTextClassifier(backbone, num_classes=2, id2label=["no", "yes"])
    assert task.id2label == {0: "no", 1: "yes"}
    config = task.get_config()
    assert config["id2label"] == {"0": "no", "1": "yes"}
    # And it deserializes (JSON keys are strings).
    assert MegaTextClassifier.from_config(config).id2label == {
        0: "no",
        1: "yes",
    }


# --- Metadata, optimizer state ---


def test_metadata_lists_the_public_task_classes(tmp_path):
    task = MegaTextClassifier(tiny_backbone(), num_classes=2)
    for model, name in ((task, "task"), (task.backbone, "backbone")):
        model.save_to_preset(str(tmp_path / name))
        with open(tmp_path / name / "metadata.json") as f:
            tasks = json.load(f)["tasks"]
        assert tasks == [
            "MegaCausalLM", "MegaMaskedLM", "MegaMultipleChoice",
            "MegaQuestionAnswerer", "MegaTextClassifier",
            "MegaTokenClassifier",
        ]  # fmt: skip
        for task_name in tasks:
            assert hasattr(keras_mega.models, task_name)


def test_reloading_a_compiled_task_prints_no_optimizer_warning(tmp_path, batch):
    task = MegaTextClassifier(tiny_backbone(), num_classes=3)
    task.optimizer.build(task.trainable_variables)  # As after fit().
    assert len(task.optimizer.variables) > 2
    preset = tmp_path / "preset"
    task.save_to_preset(str(preset))
    with h5py.File(preset / "task.weights.h5") as f:
        assert "optimizer" not in f  # A preset holds no training state.
    reloaded, messages = recorded(
        lambda: MegaTextClassifier.from_preset(str(preset))
    )
    assert head_warnings(messages) == []
    np.testing.assert_array_equal(numpy(reloaded(batch)), numpy(task(batch)))
    # A preset written with the optimizer's state (older keras-mega) too.
    skip = list(task.backbone._flatten_layers())
    keras.saving.save_weights(
        task, str(preset / "task.weights.h5"), objects_to_skip=skip
    )
    with h5py.File(preset / "task.weights.h5") as f:
        assert "optimizer" in f
    reloaded, messages = recorded(
        lambda: MegaTextClassifier.from_preset(str(preset))
    )
    assert head_warnings(messages) == []
    np.testing.assert_array_equal(numpy(reloaded(batch)), numpy(task(batch)))


def test_load_model_restores_compile_and_optimizer_state(tmp_path, batch):
    """`model.save` keeps the training state (unlike a preset): it comes
    back from `load_model`, without warnings."""
    task = MegaTextClassifier(tiny_backbone(), num_classes=3)
    task.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    task.optimizer.build(task.trainable_variables)
    task.optimizer.iterations.assign(7)
    for variable in task.optimizer.variables[2:]:
        variable.assign(np.full(tuple(variable.shape), 0.25, "float32"))
    path = str(tmp_path / "model.keras")
    task.save(path)
    restored, messages = recorded(lambda: keras.saving.load_model(path))
    assert [m for m in messages if "optimizer" in m or "compile" in m] == []
    assert isinstance(restored.optimizer, keras.optimizers.SGD)
    assert int(numpy(restored.optimizer.iterations)) == 7
    for ours, saved in zip(
        restored.optimizer.variables, task.optimizer.variables
    ):
        np.testing.assert_array_equal(numpy(ours), numpy(saved))
    np.testing.assert_array_equal(numpy(restored(batch)), numpy(task(batch)))


# --- from_preset kwargs reach the backbone; unknown ones are refused ---


def test_dtype_reaches_the_backbone_of_an_hf_directory(classifier_dir, batch):
    path, hf = classifier_dir
    state = hf.state_dict()
    embedding = state["mega.embedding_layer.word_embeddings.weight"].numpy()
    out_proj = state["classifier.out_proj.weight"].numpy().T
    backbone = MegaBackbone.from_preset(str(path), dtype="bfloat16")
    task = MegaTextClassifier.from_preset(
        str(path), dtype="bfloat16", preprocessor=None
    )
    for model in (backbone, task.backbone):
        assert model.dtype_policy.name == "bfloat16"
        weights = model.token_embedding.embeddings
        assert keras.backend.standardize_dtype(weights.dtype) == "bfloat16"
        np.testing.assert_array_equal(
            numpy(keras.ops.cast(weights, "float32")),
            embedding.astype("bfloat16").astype("float32"),
        )
    kernel = task.output_dense.kernel
    assert keras.backend.standardize_dtype(kernel.dtype) == "bfloat16"
    np.testing.assert_array_equal(
        numpy(keras.ops.cast(kernel, "float32")),
        out_proj.astype("bfloat16").astype("float32"),
    )
    logits = numpy(keras.ops.cast(task(batch), "float32"))
    expected = hf_logits(hf, batch["token_ids"], batch["padding_mask"])
    assert_close(logits, expected, rtol=5e-2)


def test_backbone_options_reach_the_backbone_of_a_task(
    classifier_dir, tmp_path, batch
):
    path, _ = classifier_dir
    chunked = transformers.MegaForSequenceClassification.from_pretrained(
        str(path), use_chunking=True, chunk_size=4
    ).eval()
    expected = hf_logits(chunked, batch["token_ids"], batch["padding_mask"])
    task = MegaTextClassifier.from_preset(
        str(path), chunk_size=4, preprocessor=None
    )
    assert task.backbone.chunk_size == 4
    assert_close(task(batch), expected)
    # A Keras preset (saved without chunking) too.
    MegaTextClassifier.from_preset(str(path), preprocessor=None).save_to_preset(
        str(tmp_path / "preset")
    )
    task = MegaTextClassifier.from_preset(
        str(tmp_path / "preset"), chunk_size=4
    )
    assert task.backbone.chunk_size == 4 and task.id2label == NAMES
    assert_close(task(batch), expected)


def test_unknown_kwargs_are_refused(classifier_dir):
    path, _ = classifier_dir
    with pytest.raises(TypeError, match=r"unknown argument\(s\): 'num_clases'"):
        MegaTextClassifier.from_preset(
            str(path), num_clases=3, preprocessor=None
        )
    with pytest.raises(TypeError, match="'colour'"):
        MegaBackbone.from_preset(str(path), colour="red")
    with pytest.raises(TypeError, match="'chunk_size'"):
        # A task around a built backbone: chunk_size would be dropped.
        MegaTextClassifier(tiny_backbone(), num_classes=2, chunk_size=4)
    with pytest.raises(ValueError, match="backbone's dtype"):
        MegaTextClassifier(tiny_backbone(), num_classes=2, dtype="bfloat16")


# --- Hub loading through huggingface_hub's cache ---


def write_hf_cache(hub, repo_id, **overrides):
    """Saves a tiny HF checkpoint in huggingface_hub's cache layout:
    `models--owner--name/snapshots/<rev>/` plus `refs/main`."""
    repo = os.path.join(hub, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", REVISION)
    hf = make_hf_model(snapshot, **overrides)
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(REVISION)
    return hf


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty HF cache in tmp_path, with HF_HUB_OFFLINE=1.

    huggingface_hub reads its environment at import: its constants are
    patched too (the CLI test sets only the environment, in a subprocess).
    """
    from huggingface_hub import constants

    hub = str(tmp_path / "hf_home" / "hub")
    os.makedirs(hub)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub


def test_cached_hf_handle_loads_offline(offline_cache, batch):
    hf = write_hf_cache(
        offline_cache, "owner/tiny-mega", cls="MegaForSequenceClassification",
        num_labels=3, id2label=NAMES,
    )  # fmt: skip
    task = MegaTextClassifier.from_preset(
        "hf://owner/tiny-mega", preprocessor=None
    )
    expected = hf_logits(hf, batch["token_ids"], batch["padding_mask"])
    assert_close(task(batch), expected)
    assert task.id2label == NAMES
    backbone = MegaBackbone.from_preset("hf://owner/tiny-mega")
    np.testing.assert_array_equal(
        numpy(backbone(batch)), numpy(task.backbone(batch))
    )


def test_keras_hub_base_class_reads_one_hf_snapshot(
    offline_cache, batch, monkeypatch
):
    """`keras_hub.models.Backbone.from_preset("hf://...")` reads the
    snapshot directory: keras-hub fetches config.json to pick the loader;
    the weights come from the local snapshot."""
    import keras_hub
    from keras_hub.src.utils import preset_utils

    from keras_mega import keras_hub_compat as compat

    write_hf_cache(offline_cache, "owner/tiny-mega")
    remote = []

    def recording(get_file):
        def wrapped(preset, path):
            if str(preset).startswith("hf://"):
                remote.append(path)
            return get_file(preset, path)

        return wrapped

    for module in (preset_utils, compat):
        for name in ("get_file", "check_file_exists"):
            monkeypatch.setattr(module, name, recording(getattr(module, name)))
    backbone = keras_hub.models.Backbone.from_preset("hf://owner/tiny-mega")
    assert isinstance(backbone, MegaBackbone)
    assert set(remote) == {"config.json"}  # keras-hub reads it up to 3x
    expected = MegaBackbone.from_preset("hf://owner/tiny-mega")
    np.testing.assert_array_equal(
        numpy(backbone(batch)), numpy(expected(batch))
    )


def test_keras_hub_base_class_keeps_a_trained_head(
    classifier_dir, tmp_path, batch
):
    """keras-hub's `TextClassifier.from_preset(..., num_classes=N)` starts
    a new head; for a keras-mega preset trained with N labels it keeps it."""
    import keras_hub

    path, _ = classifier_dir
    task = MegaTextClassifier.from_preset(str(path), preprocessor=None)
    preset = str(tmp_path / "preset")
    task.save_to_preset(preset)
    same, messages = recorded(
        lambda: keras_hub.models.TextClassifier.from_preset(
            preset, num_classes=3
        )
    )
    assert isinstance(same, MegaTextClassifier)
    assert head_warnings(messages) == []
    np.testing.assert_array_equal(numpy(same(batch)), numpy(task(batch)))
    with pytest.warns(UserWarning, match=r"head for 3 labels"):
        other = keras_hub.models.TextClassifier.from_preset(
            preset, num_classes=2
        )
    assert other.num_classes == 2


@pytest.mark.parametrize(
    "preset", ["hf://owner/not-cached", "mega_base_wikitext"]
)
def test_uncached_hf_handle_fails_in_one_line(offline_cache, preset):
    with pytest.raises(ConnectionError) as info:
        MegaBackbone.from_preset(preset)
    message = str(info.value)
    assert "\n" not in message
    assert "not in the Hugging Face cache" in message
    assert "not reachable (HF_HUB_OFFLINE is set)" in message
    assert "MegaBackbone.from_preset('DIR')" in message


def test_missing_path_says_it_does_not_exist(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    for cls in (MegaBackbone, MegaTextClassifier):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            cls.from_preset(missing)


# --- Labels refused in fit / evaluate, once per call ---


def tiny_backbone():
    return MegaBackbone(
        vocabulary_size=48, num_layers=1, hidden_dim=8, intermediate_dim=8,
        shared_dim=4, ema_dim=2, max_sequence_length=16,
    )  # fmt: skip


def _inputs(*shape):
    ids = np.full(shape, 3, "int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


@pytest.mark.parametrize("label", [3, 7, -1])
@pytest.mark.parametrize("entry", ["fit", "evaluate"])
def test_text_classifier_label_out_of_range(label, entry):
    task = MegaTextClassifier(tiny_backbone(), num_classes=3)
    with pytest.raises(ValueError, match=rf"Label {label} .*num_classes=3"):
        getattr(task, entry)(_inputs(2, 4), np.array([0, label]), verbose=0)
    with pytest.raises(ValueError, match=rf"Label {label} .*num_classes=3"):
        # Python lists too, and validation data.
        task.fit(
            _inputs(2, 4), [0, 1], validation_data=(_inputs(2, 4), [label, 0]),
            verbose=0,
        )  # fmt: skip


def test_multi_label_shape_and_values_are_checked():
    task = MegaTextClassifier(tiny_backbone(), num_classes=3, multi_label=True)
    with pytest.raises(ValueError, match=r"num_classes=3\]; got shape \(2,\)"):
        task.fit(_inputs(2, 4), np.array([0, 2]), verbose=0)
    with pytest.raises(ValueError, match="Label 2.0 is out of range"):
        task.fit(_inputs(2, 4), np.array([[0, 1, 2.0], [0, 0, 1]]), verbose=0)


def test_token_classifier_labels():
    task = MegaTokenClassifier(tiny_backbone(), num_classes=4)
    labels = np.array([[0, 1, 2, 4]])
    with pytest.raises(ValueError, match=r"Label 4 .*num_classes=4"):
        task.fit(_inputs(1, 4), labels, verbose=0)
    # HF's -100 needs a loss that ignores it (or sample_weight 0 and a
    # valid label), else it would reach the loss as an index.
    labels = np.array([[-100, 1, 2, 3]])
    with pytest.raises(ValueError, match=r"Label -100 .*ignore_class"):
        task.evaluate(_inputs(1, 4), labels, verbose=0)
    task.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=-100
        )
    )
    task._check_labels(_inputs(1, 4), labels)  # Accepted now.
    # Raw words (ragged lists): negative means "no label", as the
    # preprocessor reads it; too large is refused before preprocessing.
    task._check_labels(["a b c", "d"], [[0, -1, 3], [2]])
    with pytest.raises(ValueError, match=r"Label 9 .*num_classes=4"):
        task.fit(["a b c", "d"], [[0, -1, 3], [9]], verbose=0)


def test_multiple_choice_and_question_answerer_labels():
    choices = MegaMultipleChoice(tiny_backbone())
    with pytest.raises(ValueError, match=r"Label 3 .*3 choices"):
        choices.fit(_inputs(2, 3, 4), np.array([0, 3]), verbose=0)
    qa = MegaQuestionAnswerer(tiny_backbone())
    y = {"start_logits": np.array([0, 2]), "end_logits": np.array([1, 6])}
    with pytest.raises(ValueError, match=r"Label 6 .*6 positions"):
        qa.evaluate(_inputs(2, 6), y, verbose=0)


def test_labels_are_checked_once_per_call_not_per_step(monkeypatch):
    task = MegaTextClassifier(tiny_backbone(), num_classes=3)
    calls = []
    check = MegaTextClassifier._check_labels

    def counting(self, x, y):
        calls.append(y)
        return check(self, x, y)

    monkeypatch.setattr(MegaTextClassifier, "_check_labels", counting)
    x, y = _inputs(4, 4), np.array([0, 1, 2, 1])
    task.fit(
        x, y, batch_size=1, epochs=2, validation_data=(x, y), verbose=0
    )  # 8 steps, 2 validation runs: the train and validation labels once.
    assert len(calls) == 2
    task.predict(x, verbose=0)
    task(x)
    assert len(calls) == 2
