"""Mega tasks loaded from tiny HF Mega checkpoints of every head class.

Every HF head class is saved locally with perturbed weights, loaded with
`<Task>.from_preset(dir, preprocessor=None)`, and must give HF's logits
(fp32, eval mode) to 1e-5 relative.

The tasks are called directly (eagerly) rather than through `predict()`:
on JAX every `predict()` of a new model compiles it, while eager ops of
the same shapes are compiled once for the whole module. `predict()` on
raw strings is checked once, in the pipeline test.
"""

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from mega_fixtures import assert_close  # noqa: E402
from mega_fixtures import make_hf_model  # noqa: E402
from mega_fixtures import random_batch  # noqa: E402
from mega_fixtures import write_tiny_bpe  # noqa: E402

import keras_mega  # noqa: E402,F401  (registers the HF Mega loader)
from keras_mega.models import MegaCausalLM  # noqa: E402
from keras_mega.models import MegaMaskedLM  # noqa: E402
from keras_mega.models import MegaMultipleChoice  # noqa: E402
from keras_mega.models import MegaQuestionAnswerer  # noqa: E402
from keras_mega.models import MegaTextClassifier  # noqa: E402
from keras_mega.models import MegaTextClassifierPreprocessor  # noqa: E402
from keras_mega.models import MegaTokenClassifier  # noqa: E402

# The compiles of these tests are most of their time (conftest).
pytestmark = pytest.mark.usefixtures("quick_jax_compiles")

DECODER = dict(is_decoder=True, bidirectional=False)


def hf_forward(model, ids, mask):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        )


def load(tmp_path, hf_class, task_cls, **overrides):
    hf = make_hf_model(tmp_path, cls=hf_class, **overrides)
    return hf, task_cls.from_preset(str(tmp_path), preprocessor=None)


@pytest.fixture(scope="module")
def batch():
    return random_batch(2, 8, lengths=[8, 5])


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(add_lm_hidden_dense_layer=False, tie_word_embeddings=False)],
    ids=["tied_dense", "untied_no_dense"],
)
def test_masked_lm_matches_hf(tmp_path, batch, overrides):
    ids, mask = batch
    hf, task = load(tmp_path, "MegaForMaskedLM", MegaMaskedLM, **overrides)
    assert task.tie_weights == overrides.get("tie_word_embeddings", True)
    positions = np.tile(np.arange(8, dtype="int32"), (2, 1))
    inputs = {"token_ids": ids, "padding_mask": mask}
    logits = task({**inputs, "mask_positions": positions})
    assert_close(logits, hf_forward(hf, ids, mask).logits, mask=mask)


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(add_lm_hidden_dense_layer=False, tie_word_embeddings=False)],
    ids=["tied_dense", "untied_no_dense"],
)
def test_causal_lm_matches_hf(tmp_path, batch, overrides):
    ids, mask = batch
    hf, task = load(
        tmp_path, "MegaForCausalLM", MegaCausalLM, **DECODER, **overrides
    )
    logits = task({"token_ids": ids, "padding_mask": mask})
    assert_close(logits, hf_forward(hf, ids, mask).logits, mask=mask)


@pytest.mark.parametrize(
    "overrides, num_classes, problem_type",
    [
        (dict(num_labels=3), 3, "single_label_classification"),
        (
            dict(num_labels=4, problem_type="multi_label_classification"),
            4,
            "multi_label_classification",
        ),
        (dict(num_labels=1), 1, "regression"),
        (
            dict(num_labels=3, use_chunking=True, chunk_size=4),
            3,
            "single_label_classification",
        ),
    ],
    ids=["single_label", "multi_label", "regression", "chunked"],
)
def test_text_classifier_matches_hf(
    tmp_path, batch, overrides, num_classes, problem_type
):
    ids, mask = batch
    hf, task = load(
        tmp_path, "MegaForSequenceClassification", MegaTextClassifier,
        classifier_dropout=0.25, **overrides,
    )  # fmt: skip
    assert task.num_classes == num_classes
    assert task.problem_type == problem_type
    assert task.dropout == 0.25
    assert task.id2label == hf.config.id2label  # HF's names, LABEL_i here
    logits = task({"token_ids": ids, "padding_mask": mask})
    assert_close(logits, hf_forward(hf, ids, mask).logits)


def test_token_classifier_matches_hf(tmp_path, batch):
    ids, mask = batch
    hf, task = load(
        tmp_path, "MegaForTokenClassification", MegaTokenClassifier,
        num_labels=5,
    )  # fmt: skip
    assert task.num_classes == 5
    assert task.id2label == hf.config.id2label
    logits = task({"token_ids": ids, "padding_mask": mask})
    assert_close(logits, hf_forward(hf, ids, mask).logits, mask=mask)


def test_multiple_choice_matches_hf(tmp_path, batch):
    ids, mask = batch
    hf, task = load(tmp_path, "MegaForMultipleChoice", MegaMultipleChoice)
    # [batch 2, choices 2, length 8].
    ids = np.stack([ids, ids[::-1]])
    mask = np.stack([mask, mask[::-1]])
    logits = task({"token_ids": ids, "padding_mask": mask})
    assert logits.shape == (2, 2)
    assert_close(logits, hf_forward(hf, ids, mask).logits)


def test_question_answerer_matches_hf(tmp_path, batch):
    ids, mask = batch
    hf, task = load(tmp_path, "MegaForQuestionAnswering", MegaQuestionAnswerer)
    out = task({"token_ids": ids, "padding_mask": mask})
    expected = hf_forward(hf, ids, mask)
    assert_close(out["start_logits"], expected.start_logits, mask=mask)
    assert_close(out["end_logits"], expected.end_logits, mask=mask)


def test_new_head_and_unknown_label_count(tmp_path, batch):
    ids, mask = batch
    make_hf_model(tmp_path, cls="MegaForMaskedLM")
    # A classifier from an MLM checkpoint: the label count is unknown.
    with pytest.raises(ValueError, match="num_classes"):
        MegaTextClassifier.from_preset(str(tmp_path), preprocessor=None)
    # Given num_classes, the backbone loads and a new head starts.
    task = MegaTextClassifier.from_preset(
        str(tmp_path), num_classes=6, preprocessor=None
    )
    logits = task({"token_ids": ids, "padding_mask": mask})
    assert logits.shape == (2, 6)
    # A head class that does not match: a warning, and a random head.
    with pytest.warns(UserWarning, match="random weights"):
        MegaQuestionAnswerer.from_preset(str(tmp_path), preprocessor=None)


def test_classifier_pipeline_from_hf_directory(tmp_path):
    """Raw strings through the preprocessor loaded from the HF directory."""
    files = write_tiny_bpe(tmp_path / "bpe")
    hf_tokenizer = transformers.RobertaTokenizerFast(*files)
    vocab_size = hf_tokenizer.vocab_size
    hf = make_hf_model(
        tmp_path / "hf", cls="MegaForSequenceClassification",
        vocab_size=vocab_size, num_labels=3,
    )  # fmt: skip
    hf_tokenizer.save_pretrained(str(tmp_path / "hf"))
    task = MegaTextClassifier.from_preset(str(tmp_path / "hf"))
    assert isinstance(task.preprocessor, MegaTextClassifierPreprocessor)
    task.preprocessor.sequence_length = 12
    texts = ["the quick brown fox", "good  movie\tbad film"]
    encoded = hf_tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=12,
        return_tensors="np",
    )
    expected = hf_forward(
        hf, encoded["input_ids"], encoded["attention_mask"]
    ).logits
    x = task.preprocessor(texts)
    np.testing.assert_array_equal(x["token_ids"], encoded["input_ids"])
    assert_close(task.predict(texts, verbose=0), expected)
    # Sentence pairs use RoBERTa's "</s></s>" separator, as HF.
    pair = task.preprocessor(x=(["a cat"], ["a dog"]))
    expected = hf_tokenizer(
        ["a cat"], ["a dog"], padding="max_length", max_length=12
    )["input_ids"]
    assert encoded["attention_mask"][0].all()  # The long text was cut.
    np.testing.assert_array_equal(pair["token_ids"], expected)


def test_masked_lm_from_pytorch_bin_with_tied_copy(tmp_path, batch):
    ids, mask = batch
    hf = make_hf_model(None, cls="MegaForMaskedLM")
    hf.save_pretrained(str(tmp_path), safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists()
    task = MegaMaskedLM.from_preset(str(tmp_path), preprocessor=None)
    positions = np.tile(np.arange(8, dtype="int32"), (2, 1))
    inputs = {"token_ids": ids, "padding_mask": mask}
    logits = task({**inputs, "mask_positions": positions})
    assert_close(logits, hf_forward(hf, ids, mask).logits, mask=mask)


def test_keras_hub_base_classes_find_mega_tasks(tmp_path):
    import keras_hub

    make_hf_model(tmp_path, cls="MegaForSequenceClassification", num_labels=3)
    task = keras_hub.models.TextClassifier.from_preset(
        str(tmp_path), preprocessor=None
    )
    assert isinstance(task, MegaTextClassifier) and task.num_classes == 3
    task = keras_hub.models.MaskedLM.from_preset(
        str(tmp_path), preprocessor=None
    )
    assert isinstance(task, MegaMaskedLM)
