"""Mega task models and preprocessors, without Hugging Face.

Each task trains on raw strings through its preprocessor on the current
backend, survives `model.save`/`load_model` and `save_to_preset`/
`from_preset` bit-exactly, and raises clear errors on bad input.

Each task is built and trained once per module (`trained`) and shared by
the tests, which keeps the module fast: compiling a train step is most of
a test's time.
"""

import os

import keras
import numpy as np
import pytest
from mega_fixtures import NO_DROPOUT
from mega_fixtures import preprocessed
from mega_fixtures import run_reporting
from mega_fixtures import tiny_tokenizer

from keras_mega.models import MegaBackbone
from keras_mega.models import MegaCausalLM
from keras_mega.models import MegaCausalLMPreprocessor
from keras_mega.models import MegaMaskedLM
from keras_mega.models import MegaMaskedLMPreprocessor
from keras_mega.models import MegaMultipleChoice
from keras_mega.models import MegaMultipleChoicePreprocessor
from keras_mega.models import MegaQuestionAnswerer
from keras_mega.models import MegaQuestionAnswererPreprocessor
from keras_mega.models import MegaTextClassifier
from keras_mega.models import MegaTextClassifierPreprocessor
from keras_mega.models import MegaTokenClassifier
from keras_mega.models import MegaTokenClassifierPreprocessor

# The compiles of these tests are most of their time (conftest).
pytestmark = pytest.mark.usefixtures("quick_jax_compiles")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("bpe"))


def tiny_backbone(tokenizer, **kwargs):
    config = dict(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=1,
        hidden_dim=16,
        intermediate_dim=24,
        shared_dim=8,
        ema_dim=4,
        **NO_DROPOUT,
    )
    return MegaBackbone(**{**config, **kwargs})


CONTEXTS = [
    "john lives in paris",
    "a cat sat on the mat",
    "the quick brown fox",
    "a good movie",
]
ANSWERS = ["paris", "cat", "fox", "movie"]
SPANS = np.array(
    [[c.index(a), c.index(a) + len(a)] for c, a in zip(CONTEXTS, ANSWERS)]
)
TEXTS = ["good movie", "bad film", "a good film", "a bad movie"]
MULTI_LABELS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], "float32")


def make_task(name, tokenizer):
    """A tiny task with its preprocessor, and raw training data `(x, y)`."""
    if name == "masked_lm":
        preprocessor = MegaMaskedLMPreprocessor(
            tokenizer,
            sequence_length=8,
            mask_selection_rate=0.5,
            mask_selection_length=4,
        )
        return MegaMaskedLM(tiny_backbone(tokenizer), preprocessor), (
            TEXTS,
            None,
        )
    if name == "causal_lm":
        backbone = tiny_backbone(tokenizer, causal=True, bidirectional=False)
        preprocessor = MegaCausalLMPreprocessor(tokenizer, sequence_length=8)
        return MegaCausalLM(backbone, preprocessor), (TEXTS, None)
    if name == "text_classifier":
        # Multi-label: [batch, num_classes] float labels through `tf.data`.
        preprocessor = MegaTextClassifierPreprocessor(
            tokenizer, sequence_length=8
        )
        model = MegaTextClassifier(
            tiny_backbone(tokenizer), 3, preprocessor, dropout=0.0,
            multi_label=True,
        )  # fmt: skip
        return model, (TEXTS, MULTI_LABELS)
    if name == "token_classifier":
        preprocessor = MegaTokenClassifierPreprocessor(
            tokenizer, sequence_length=8
        )
        model = MegaTokenClassifier(
            tiny_backbone(tokenizer), 3, preprocessor, dropout=0.0
        )
        labels = np.array([[1, 2, -1], [2, 1, -1], [0, 1, 2], [0, 2, 1]])
        return model, (TEXTS, labels)
    if name == "multiple_choice":
        preprocessor = MegaMultipleChoicePreprocessor(
            tokenizer, sequence_length=16
        )
        model = MegaMultipleChoice(
            tiny_backbone(tokenizer), preprocessor, dropout=0.0
        )
        prompts = np.array(["good", "bad", "a", "the"])
        choices = np.array(
            [["movie", "film"], ["film", "movie"], ["cat", "dog"], ["a", "b"]]
        )
        return model, ((prompts, choices), np.array([0, 1, 0, 1]))
    if name == "question_answerer":
        preprocessor = MegaQuestionAnswererPreprocessor(
            tokenizer, sequence_length=24
        )
        model = MegaQuestionAnswerer(tiny_backbone(tokenizer), preprocessor)
        questions = np.array(["where", "who sat", "what", "what"])
        return model, ((questions, np.array(CONTEXTS)), SPANS)
    raise ValueError(name)


TASKS = [
    "masked_lm",
    "causal_lm",
    "text_classifier",
    "token_classifier",
    "multiple_choice",
    "question_answerer",
]


def repeat(data, times):
    """Lists or arrays (or tuples of them) repeated along the batch axis."""
    if data is None:
        return None
    if isinstance(data, list):
        return data * times
    if isinstance(data, tuple):
        return tuple(repeat(a, times) for a in data)
    return np.concatenate([data] * times)


@pytest.fixture(scope="module")
def trained(tokenizer):
    """`trained(name)`: `(model, x, losses)`, the task built and fitted on
    raw strings once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            model, (x, y) = make_task(name, tokenizer)
            model.compile(optimizer=keras.optimizers.Adam(2e-2))
            # Three steps per epoch: few epochs (each costs a `tf.data`
            # pass), enough steps to learn.
            history = model.fit(
                repeat(x, 3), repeat(y, 3), epochs=3, batch_size=4, verbose=0
            )
            cache[name] = model, x, history.history["loss"]
        return cache[name]

    return get


@pytest.mark.parametrize("name", TASKS)
def test_fit_on_raw_strings_lowers_the_loss(name, trained):
    _, _, losses = trained(name)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.95 * losses[0], losses


def assert_same_outputs(a, b):
    for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v)
        )


@pytest.mark.parametrize("name", TASKS)
def test_save_and_load_round_trip(name, trained, tmp_path):
    model, x, _ = trained(name)
    inputs = preprocessed(model, x)
    expected = model(inputs)

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert type(restored.preprocessor) is type(model.preprocessor)
    assert restored.preprocessor.get_config() == model.preprocessor.get_config()
    assert_same_outputs(preprocessed(restored, x), inputs)
    assert_same_outputs(restored(inputs), expected)

    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    loaded = type(model).from_preset(preset)
    assert loaded.preprocessor.get_config() == model.preprocessor.get_config()
    assert_same_outputs(preprocessed(loaded, x), inputs)
    assert_same_outputs(loaded(inputs), expected)


OTHER_BACKEND = {"jax": "tensorflow", "tensorflow": "torch", "torch": "jax"}
LOAD_ON_OTHER_BACKEND = r"""
import json, sys
import keras, keras_hub, numpy as np
import keras_mega
sys.path.insert(0, sys.argv[2])
from mega_fixtures import preprocessed

BASES = {
    "causal_lm": keras_hub.models.CausalLM,
    "masked_lm": keras_hub.models.MaskedLM,
    "text_classifier": keras_hub.models.TextClassifier,
}
report = {}
for name, task in json.load(open(sys.argv[1] + "/manifest.json")).items():
    root = f"{sys.argv[1]}/{name}"
    cls = BASES.get(name) or getattr(keras_mega.models, task["class"])
    model = cls.from_preset(root + "/preset")
    saved = np.load(root + "/arrays.npz")
    x = tuple(map(np.array, task["x"])) if task["pair"] else task["x"]
    inputs = keras.tree.map_structure(keras.ops.convert_to_numpy, preprocessed(model, x))
    outputs = keras.tree.flatten(model(inputs))
    report[name] = {
        "class": type(model).__name__,
        "weights_equal": all(
            np.array_equal(keras.ops.convert_to_numpy(w), saved[f"w{i}"])
            for i, w in enumerate(model.weights)
        ),
        "inputs_equal": all(
            np.array_equal(np.asarray(inputs[k]), saved["in_" + k]) for k in inputs
        ),
        "max_error": max(
            float(np.abs(keras.ops.convert_to_numpy(o) - saved[f"out{i}"]).max())
            for i, o in enumerate(outputs)
        ),
    }
print("RESULT " + json.dumps(report))
"""


def test_presets_load_on_another_backend(trained, tmp_path):
    import json

    manifest = {}
    for name in TASKS:
        model, x, _ = trained(name)
        root = tmp_path / name
        model.save_to_preset(str(root / "preset"))
        inputs = keras.tree.map_structure(
            keras.ops.convert_to_numpy, preprocessed(model, x)
        )
        arrays = {
            f"w{i}": keras.ops.convert_to_numpy(w)
            for i, w in enumerate(model.weights)
        }
        arrays.update({"in_" + k: np.asarray(v) for k, v in inputs.items()})
        for i, out in enumerate(keras.tree.flatten(model(inputs))):
            arrays[f"out{i}"] = keras.ops.convert_to_numpy(out)
        np.savez(root / "arrays.npz", **arrays)
        pair = isinstance(x, tuple)
        manifest[name] = {
            "class": type(model).__name__,
            "pair": pair,
            "x": [np.asarray(a).tolist() for a in x] if pair else list(x),
        }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))

    backend = OTHER_BACKEND[keras.backend.backend()]
    report = run_reporting(
        LOAD_ON_OTHER_BACKEND, tmp_path, os.path.dirname(__file__),
        KERAS_BACKEND=backend,
    )  # fmt: skip
    assert sorted(report) == sorted(TASKS)
    for name, result in report.items():
        model = trained(name)[0]
        assert result["class"] == type(model).__name__, name
        assert result["weights_equal"], f"{name}: weights differ on {backend}"
        assert result["inputs_equal"], f"{name}: preprocessing differs"
        assert result["max_error"] < 1e-5, (name, backend, result["max_error"])


def test_text_classifier_multi_label_and_regression(tokenizer, trained):
    model, _, _ = trained("text_classifier")  # Trained on multi labels.
    assert model.problem_type == "multi_label_classification"
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    preprocessor = model.preprocessor
    inputs = preprocessor(TEXTS)
    assert model(inputs).shape == (4, 3)

    regressor = MegaTextClassifier(tiny_backbone(tokenizer), 1, preprocessor)
    assert regressor.problem_type == "regression"
    assert isinstance(regressor.loss, keras.losses.MeanSquaredError)
    assert regressor(inputs).shape == (4, 1)
    single = MegaTextClassifier(tiny_backbone(tokenizer), 3, preprocessor)
    assert single.problem_type == "single_label_classification"
    assert isinstance(single.loss, keras.losses.SparseCategoricalCrossentropy)


def test_multiple_choice_shapes_and_rank_error(tokenizer, trained):
    model, _, _ = trained("multiple_choice")
    preprocessor = model.preprocessor
    assert preprocessor.sequence_length == 16
    prompts = ["the sky is", "grass is"]
    choices = [["blue", "green", "loud"], ["red", "green", "sad"]]
    x = preprocessor(x=(prompts, choices))
    assert x["token_ids"].shape == (2, 3, 16)
    assert x["padding_mask"].shape == (2, 3, 16)
    # Each row is "<s> prompt </s></s> choice </s>".
    row = x["token_ids"][1, 2].tolist()
    expected = [0, *tokenizer("grass is").tolist(), 2, 2]
    assert row[: len(expected)] == expected
    assert model(x).shape == (2, 3)
    assert model.predict((prompts, choices), verbose=0).shape == (2, 3)
    flat = {k: v[:, 0] for k, v in x.items()}
    with pytest.raises(ValueError, match="rank 3"):
        model(flat)
    with pytest.raises(ValueError, match="outside"):
        preprocessor(x=(prompts, choices), y=[0, 3])
    with pytest.raises(ValueError, match="same number of choices"):
        preprocessor(x=(prompts, [["a", "b"], ["c"]]))


def test_question_answerer_spans_map_back_to_text(tokenizer):
    preprocessor = MegaQuestionAnswererPreprocessor(
        tokenizer, sequence_length=32
    )
    contexts = CONTEXTS + ["naïve café: 東京 😀 the quick brown fox"]
    answers = ANSWERS + ["東京 😀"]
    questions = ["where", "who", "what", "what", "where"]
    spans = [
        [c.index(a), c.index(a) + len(a)] for c, a in zip(contexts, answers)
    ]
    x, y = preprocessor(x=(questions, contexts), y=spans)
    for i, (question, context) in enumerate(zip(questions, contexts)):
        start, end = y["start_logits"][i], y["end_logits"][i]
        assert start <= end
        text = preprocessor.span_to_text(question, context, start, end)
        assert text == answers[i]
        ids = x["token_ids"][i, start : end + 1]
        assert tokenizer.detokenize(ids).strip() == answers[i]
    # Positions outside the context give no text.
    assert preprocessor.span_to_text(questions[0], contexts[0], 0, 1) == ""

    model = MegaQuestionAnswerer(tiny_backbone(tokenizer), preprocessor)
    out = model(x)
    assert out["start_logits"].shape == (5, 32)
    assert out["end_logits"].shape == (5, 32)


def test_question_answerer_answer_outside_truncated_context(tokenizer):
    preprocessor = MegaQuestionAnswererPreprocessor(
        tokenizer, sequence_length=10
    )
    context = "a cat sat on the mat and john lives in paris"
    span = [[context.index("paris"), len(context)]]
    with pytest.raises(ValueError, match="only .* of the context's"):
        preprocessor(x=(["where"], [context]), y=span)
    # Without labels, long contexts are truncated, not dropped.
    x = preprocessor(x=(["where", "who"], [context, "x"]))
    assert x["token_ids"].shape == (2, 10)
    with pytest.raises(ValueError, match="non-empty span"):
        preprocessor(x=(["where"], [context]), y=[[5, 5]])
    with pytest.raises(ValueError, match="non-empty span"):
        preprocessor(x=(["where"], [context]), y=[[0, 1000]])


def test_question_answerer_error_inside_tf_data(tokenizer):
    tf = pytest.importorskip("tensorflow")
    preprocessor = MegaQuestionAnswererPreprocessor(
        tokenizer, sequence_length=10
    )
    context = "a cat sat on the mat and john lives in paris"
    span = [[context.index("paris"), len(context)]]
    ds = tf.data.Dataset.from_tensor_slices(((["where"], [context]), span))
    ds = ds.batch(1).map(preprocessor)
    with pytest.raises(Exception, match="only .* of the context's"):
        next(iter(ds))


def test_custom_preprocessors_same_in_tf_data(tokenizer):
    tf = pytest.importorskip("tensorflow")
    cases = [
        (
            MegaTokenClassifierPreprocessor(tokenizer, sequence_length=8),
            np.array(TEXTS),
            np.array([[1, 2, -1], [2, 1, -1], [0, 1, 2], [0, 2, 1]]),
        ),
        (
            MegaMultipleChoicePreprocessor(tokenizer, sequence_length=10),
            (np.array(["good", "bad"]), np.array([["a", "b"], ["c", "d"]])),
            np.array([0, 1]),
        ),
        (
            MegaQuestionAnswererPreprocessor(tokenizer, sequence_length=24),
            (np.array(["where", "who"]), np.array(CONTEXTS[:2])),
            SPANS[:2],
        ),
    ]
    for preprocessor, x, y in cases:
        eager = preprocessor(x=x, y=y)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        graph = next(iter(ds.map(preprocessor)))
        assert_same_outputs(graph, eager)


def test_token_classifier_alignment_and_truncation(tokenizer):
    preprocessor = MegaTokenClassifierPreprocessor(tokenizer, sequence_length=6)
    words = [["john", "lives", "in", "paris"], ["naïve"]]
    x, y, weights = preprocessor(x=words, y=[[1, 0, 0, 2], [3, -1, -1, -1]])
    assert x["token_ids"].shape == (2, 6)
    ids = x["token_ids"][0].tolist()
    # Each word is tokenized on its own, with a space unless first.
    expected = [0]
    firsts = []
    for j, word in enumerate(words[0]):
        firsts.append(len(expected))
        expected += tokenizer((" " if j else "") + word).tolist()
    kept = [i for i in firsts if i < 5]
    assert ids[:5] == expected[:5] and ids[5] == 2
    assert [int(y[0, i]) for i in kept] == [1, 0, 0, 2][: len(kept)]
    assert np.flatnonzero(weights[0]).tolist() == kept
    # "naïve" may take several tokens: only the first one is labeled.
    assert weights[1].sum() == 1 and y[1, 1] == 3
    with pytest.raises(ValueError, match="4 words but 3 labels"):
        preprocessor(x=["john lives in paris"], y=[[1, 0, 0]])
    with pytest.raises(ValueError, match="past the last word"):
        preprocessor(x=["john"], y=[[1, 0]])


def test_long_inputs_are_truncated_not_dropped(tokenizer):
    long = " ".join(["the quick brown fox"] * 20)
    for preprocessor in [
        MegaTextClassifierPreprocessor(tokenizer, sequence_length=8),
        MegaCausalLMPreprocessor(tokenizer, sequence_length=8),
        MegaTokenClassifierPreprocessor(tokenizer, sequence_length=8),
    ]:
        x = keras.utils.unpack_x_y_sample_weight(preprocessor([long, "a"]))[0]
        assert tuple(x["token_ids"].shape) == (2, 8)


def test_clear_errors(tokenizer):
    backbone = tiny_backbone(tokenizer)
    with pytest.raises(ValueError, match="num_classes"):
        MegaTextClassifier(backbone, num_classes=None)
    with pytest.raises(ValueError, match="num_classes"):
        MegaTokenClassifier(backbone, num_classes=0)
    with pytest.raises(ValueError, match="causal backbone"):
        MegaCausalLM(backbone)
    small = tiny_backbone(tokenizer, vocabulary_size=50)
    preprocessor = MegaTextClassifierPreprocessor(tokenizer)
    with pytest.raises(ValueError, match="vocabulary_size=50"):
        MegaTextClassifier(small, 2, preprocessor)


def test_untied_lm_head_without_hidden_dense(tokenizer):
    backbone = tiny_backbone(tokenizer)
    model = MegaMaskedLM(backbone, use_hidden_dense=False, tie_weights=False)
    assert model.lm_head.dense is None
    assert model.lm_head.kernel.shape == (16, tokenizer.vocabulary_size())
    # [4, 8] like the other tests: JAX compiles eager ops once per shape.
    row = {
        "token_ids": [0, 5, 4, 2, 1, 1, 1, 1],
        "padding_mask": [1, 1, 1, 1, 0, 0, 0, 0],
        "mask_positions": [2, 1, 0],
    }
    inputs = {k: np.tile(np.array(v, "int32"), (4, 1)) for k, v in row.items()}
    assert model(inputs).shape == (4, 3, tokenizer.vocabulary_size())
    restored = MegaMaskedLM.from_config(model.get_config())
    assert restored.lm_head.dense is None and not restored.tie_weights


def test_segment_embeddings_get_zero_segment_ids(tokenizer):
    backbone = tiny_backbone(tokenizer, num_segments=2)
    model = MegaTextClassifier(backbone, 2)
    assert set(model.input) == {"token_ids", "padding_mask"}
    inputs = {
        "token_ids": np.array([[0, 5, 6, 2]], "int32"),
        "padding_mask": np.ones((1, 4), "int32"),
    }
    assert model(inputs).shape == (1, 2)


@pytest.mark.parametrize("name", ["text_classifier", "multiple_choice"])
def test_out_of_range_token_ids_give_a_clear_error(name, trained):
    model, x, _ = trained(name)  # With a preprocessor attached.
    inputs = preprocessed(model, x)
    vocabulary_size = model.backbone.vocabulary_size
    bad = dict(inputs, token_ids=np.array(inputs["token_ids"]))
    bad["token_ids"].flat[3] = vocabulary_size
    message = f"Token id {vocabulary_size} at index .* is out of range"
    with pytest.raises(ValueError, match=message):
        model.predict(bad, verbose=0)
    with pytest.raises(ValueError, match=message):
        model(bad)
    bad["token_ids"].flat[3] = -1
    with pytest.raises(ValueError, match="Token id -1 at index"):
        model.evaluate(bad, verbose=0)


def test_failed_task_save_keeps_the_previous_preset(
    trained, tmp_path, monkeypatch
):
    model, x, _ = trained("text_classifier")
    preset = tmp_path / "preset"
    model.save_to_preset(str(preset))

    def contents():
        files = {}
        for root, _, names in os.walk(preset):
            for name in names:
                with open(os.path.join(root, name), "rb") as f:
                    files[os.path.relpath(f.name, preset)] = f.read()
        return files

    before = contents()

    def broken_save(self, preset_dir):
        # The task and backbone are written; the preprocessor fails halfway.
        with open(os.path.join(preset_dir, "preprocessor.json"), "w") as f:
            f.write("{half")
        raise OSError("No space left on device")

    monkeypatch.setattr(
        MegaTextClassifierPreprocessor, "save_to_preset", broken_save
    )
    other = MegaTextClassifier(
        tiny_backbone(model.preprocessor.tokenizer), 3, model.preprocessor,
        multi_label=True,
    )  # fmt: skip
    with pytest.raises(OSError, match="No space"):
        other.save_to_preset(str(preset))
    assert contents() == before
    assert os.listdir(tmp_path) == ["preset"]  # No partial directory left.
    monkeypatch.undo()
    loaded = MegaTextClassifier.from_preset(str(preset))
    inputs = preprocessed(model, x)
    assert_same_outputs(loaded(inputs), model(inputs))


def test_remote_preset_offline_fails_fast(monkeypatch, tmp_path):
    # huggingface_hub reads its environment at import: patch both.
    from huggingface_hub import constants

    hub = str(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub)
    for cls in (MegaTextClassifier, MegaTextClassifierPreprocessor):
        with pytest.raises(ConnectionError, match="not reachable"):
            cls.from_preset("hf://mnaylor/mega-base-wikitext")


@pytest.mark.skipif(
    keras.config.backend() == "torch",
    reason="Keras cannot export dict inputs on torch (tested in test_export)",
)
@pytest.mark.parametrize(
    "name", ["text_classifier", "multiple_choice", "masked_lm"]
)
def test_exported_task_serves_the_same_outputs(name, trained, tmp_path):
    """Also with another number of choices / masked positions than traced:
    only the sequence axis is fixed on JAX."""
    tf = pytest.importorskip("tensorflow")
    model, x, _ = trained(name)
    inputs = preprocessed(model, x)
    inputs = {
        k: keras.ops.convert_to_numpy(v).astype("int32")
        for k, v in inputs.items()
    }
    path = str(tmp_path / "saved_model")
    model.export(path, sequence_length=inputs["token_ids"].shape[-1])
    served = tf.saved_model.load(path)  # Keep it: its variables live here.
    variants = [inputs]
    if name == "multiple_choice":  # 3 choices instead of 2
        variants.append(
            {k: np.concatenate([v, v[:, :1]], 1) for k, v in inputs.items()}
        )
    if name == "masked_lm":  # 3 masked positions instead of 2
        positions = inputs["mask_positions"]
        variants.append(
            dict(
                inputs,
                mask_positions=np.concatenate(
                    [positions, positions[:, :1] + 2], 1
                ),
            )
        )
    for variant in variants:
        actual = served.serve({k: tf.constant(v) for k, v in variant.items()})
        expected = keras.ops.convert_to_numpy(model(variant))
        # float32 rounding of another runtime (jax2tf lowers to TF kernels
        # that sum in another order): 1e-6 of the outputs' scale. Measured:
        # up to 3.2e-6 on logits of magnitude 2.2 (JAX, multiple choice).
        np.testing.assert_allclose(
            np.asarray(actual),
            expected,
            rtol=1e-5,
            atol=2e-6 * max(1.0, float(np.abs(expected).max())),
        )
