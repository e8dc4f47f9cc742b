"""The token-id checks copy ids to the host once per call, never per step.

`fit`/`predict`/`evaluate` check the arrays they are given up front (or the
first batch of a dataset); their steps (and the backbone inside a task) do
not copy the ids again, which on a GPU would be a host sync every step.
Eager execution (`run_eagerly=True`, torch's default) is where the steps
see concrete values, so the counts hold on every backend.
"""

import numpy as np
import pytest

from keras_mega.models import MegaBackbone
from keras_mega.models import MegaTextClassifier
from keras_mega.models import mega_model_mixin

VOCABULARY = 20
STEPS = 8
BATCH = 2


def tiny_classifier():
    backbone = MegaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        hidden_dim=8,
        intermediate_dim=8,
        shared_dim=4,
        ema_dim=2,
        max_sequence_length=16,
    )
    classifier = MegaTextClassifier(backbone, num_classes=2, preprocessor=None)
    classifier.compile(run_eagerly=True)
    return classifier


def data(bad_at=None):
    ids = np.full((STEPS * BATCH, 6), 3, "int32")
    if bad_at is not None:
        ids[bad_at, 2] = VOCABULARY + 5
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    return x, np.zeros((STEPS * BATCH,), "int32")


@pytest.fixture
def copies(monkeypatch):
    """Counts the copies of token ids to the host."""
    count = []
    original = mega_model_mixin.host_values

    def counting(token_ids):
        count.append(1)
        return original(token_ids)

    monkeypatch.setattr(mega_model_mixin, "host_values", counting)
    return count


def test_fit_copies_ids_once_not_per_step(copies):
    classifier = tiny_classifier()
    x, y = data()
    history = classifier.fit(x, y, batch_size=BATCH, verbose=0)
    assert len(history.history["loss"]) == 1
    # Before the fix: about 20 copies in these 8 steps (task and backbone
    # each step, on torch).
    assert len(copies) == 1


def test_fit_with_validation_checks_each_array_once(copies):
    classifier = tiny_classifier()
    x, y = data()
    classifier.fit(
        x, y, batch_size=BATCH, epochs=2, validation_data=(x, y), verbose=0
    )
    assert len(copies) == 2


@pytest.mark.parametrize("entry", ["predict", "evaluate"])
def test_predict_and_evaluate_copy_once(copies, entry):
    classifier = tiny_classifier()
    x, y = data()
    if entry == "predict":
        out = classifier.predict(x, batch_size=BATCH, verbose=0)
        assert out.shape == (STEPS * BATCH, 2)
    else:
        classifier.evaluate(x, y, batch_size=BATCH, verbose=0)
    assert len(copies) == 1


def test_dataset_checks_its_first_batch_only(copies):
    tf = pytest.importorskip("tensorflow")
    classifier = tiny_classifier()
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    classifier.fit(dataset, verbose=0)
    assert len(copies) == 1

    bad = tf.data.Dataset.from_tensor_slices(data(bad_at=0)).batch(BATCH)
    with pytest.raises(ValueError, match=rf"Token id {VOCABULARY + 5} "):
        classifier.fit(bad, verbose=0)


def test_direct_call_copies_once_and_still_raises(copies):
    classifier = tiny_classifier()
    x, _ = data()
    classifier(x)
    assert len(copies) == 1  # The task checks; its backbone does not again.

    bad, _ = data(bad_at=3)
    for model in (classifier, classifier.backbone):
        with pytest.raises(ValueError, match=r"Token id 25 at index \(3, 2\)"):
            model(bad)


def test_calls_after_fit_are_checked_again(copies):
    classifier = tiny_classifier()
    x, y = data()
    bad, _ = data(bad_at=0)
    with pytest.raises(ValueError, match="Token id 25"):
        classifier.fit(bad, y, batch_size=BATCH, verbose=0)
    classifier.fit(x, y, batch_size=BATCH, verbose=0)
    # Neither a failed nor a finished `fit` leaves its steps unchecked.
    assert mega_model_mixin._STATE.scopes == {}
    assert mega_model_mixin._STATE.depth == 0
    with pytest.raises(ValueError, match="Token id 25"):
        classifier(bad)
    with pytest.raises(ValueError, match="Token id 25"):
        classifier.predict(bad, batch_size=BATCH, verbose=0)


def test_traced_calls_copy_nothing(copies):
    classifier = tiny_classifier()
    classifier.compile(run_eagerly=False)
    x, y = data()
    classifier.fit(x, y, batch_size=BATCH, verbose=0)
    assert len(copies) == 1  # The arrays, up front; the steps read none.


def test_steps_still_run_the_checks_that_read_no_values(copies):
    classifier = tiny_classifier()
    x, y = data()
    calls = []
    backbone = classifier.backbone
    original = backbone._check_inputs

    def recording(inputs):
        calls.append(1)
        return original(inputs)

    backbone._check_inputs = recording
    classifier.fit(x, y, batch_size=BATCH, verbose=0)
    assert len(copies) == 1
    assert len(calls) >= 1  # the backbone's shape checks, every call
