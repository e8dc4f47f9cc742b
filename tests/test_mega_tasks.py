"""Mega task models and preprocessors, without Hugging Face.

Each task trains on raw strings through its preprocessor on the current
backend, survives `model.save`/`load_model` and `save_to_preset`/
`from_preset` bit-exactly, and raises clear errors on bad input.
"""

import keras
import numpy as np
import pytest

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
from test_mega_tokenizer import tiny_tokenizer

NO_DROPOUT = dict(
    dropout=0.0, hidden_dropout=0.0, attention_dropout=0.0,
    ffn_activation_dropout=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("bpe"))


def tiny_backbone(tokenizer, **kwargs):
    config = dict(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
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
        preprocessor = MegaTextClassifierPreprocessor(
            tokenizer, sequence_length=8
        )
        model = MegaTextClassifier(
            tiny_backbone(tokenizer), 2, preprocessor, dropout=0.0
        )
        return model, (TEXTS, np.array([1, 0, 1, 0]))
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
            tokenizer, sequence_length=10
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


@pytest.mark.parametrize("name", TASKS)
def test_fit_on_raw_strings_lowers_the_loss(name, tokenizer):
    model, (x, y) = make_task(name, tokenizer)
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    history = model.fit(x, y, epochs=6, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.95 * losses[0], losses


def preprocessed(model, x):
    """The model's inputs for raw `x`, deterministic for the masked LM."""
    if isinstance(model, MegaMaskedLM):
        out = model.preprocessor.tokenizer(list(x))
        ids = np.full((len(x), 8), 1, "int32")
        for i, row in enumerate(out):
            ids[i, : len(row)] = row[:8]
        return {
            "token_ids": ids,
            "padding_mask": (ids != 1).astype("int32"),
            "mask_positions": np.array([[1, 2]] * len(x), "int32"),
        }
    return keras.utils.unpack_x_y_sample_weight(model.preprocessor(x=x))[0]


def assert_same_outputs(a, b):
    for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v)
        )


@pytest.mark.parametrize("name", TASKS)
def test_save_and_load_round_trip(name, tokenizer, tmp_path):
    model, (x, _) = make_task(name, tokenizer)
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


def test_text_classifier_multi_label_and_regression(tokenizer):
    preprocessor = MegaTextClassifierPreprocessor(tokenizer, sequence_length=8)
    model = MegaTextClassifier(
        tiny_backbone(tokenizer), 3, preprocessor, multi_label=True
    )
    assert model.problem_type == "multi_label_classification"
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], "float32")
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    history = model.fit(TEXTS, labels, epochs=4, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    inputs = preprocessor(TEXTS)
    assert model(inputs).shape == (4, 3)

    regressor = MegaTextClassifier(tiny_backbone(tokenizer), 1, preprocessor)
    assert regressor.problem_type == "regression"
    assert isinstance(regressor.loss, keras.losses.MeanSquaredError)
    assert regressor(inputs).shape == (4, 1)
    single = MegaTextClassifier(tiny_backbone(tokenizer), 3, preprocessor)
    assert single.problem_type == "single_label_classification"
    assert isinstance(single.loss, keras.losses.SparseCategoricalCrossentropy)


def test_multiple_choice_shapes_and_rank_error(tokenizer):
    preprocessor = MegaMultipleChoicePreprocessor(tokenizer, sequence_length=16)
    model = MegaMultipleChoice(tiny_backbone(tokenizer), preprocessor)
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
    inputs = {
        "token_ids": np.array([[0, 5, 4, 2]], "int32"),
        "padding_mask": np.ones((1, 4), "int32"),
        "mask_positions": np.array([[2, 1, 0]], "int32"),
    }
    assert model(inputs).shape == (1, 3, tokenizer.vocabulary_size())
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
