"""`MegaPrefixState`: prefill a prefix once, continue from it many times."""

import keras
import numpy as np
import pytest
from mega_fixtures import CAUSAL
from mega_fixtures import tiny_config

from keras_mega.models import MegaBackbone
from keras_mega.models import MegaCausalLM
from keras_mega.models.mega_prefix_state import MegaPrefixState

pytestmark = pytest.mark.usefixtures("quick_jax_compiles")

VOCAB = 48
PREFIX = 11  # crosses two boundaries of chunk 4, ends mid-chunk
LENGTH = 9  # continuation + generated tokens
CONTINUATION_LENGTHS = [2, 5, 0]  # 0: generate right after the prefix


def causal_lm(**kwargs):
    config = tiny_config(
        vocabulary_size=VOCAB, max_sequence_length=32, **CAUSAL
    )
    model = MegaCausalLM(MegaBackbone(**{**config, **kwargs}))
    model.compile(sampler="greedy")
    return model


def ids(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(3, VOCAB, shape).astype("int32")


def continuations(seed, lengths=CONTINUATION_LENGTHS):
    mask = np.arange(LENGTH)[None] < np.array(lengths)[:, None]
    token_ids = np.where(mask, ids((len(lengths), LENGTH), seed), 1)
    return {"token_ids": token_ids.astype("int32"), "padding_mask": mask}


def one_go_logits(model, prefix, token_ids):
    """Logits of prefix + tokens in one forward, from the prefix's last
    position on: `[:, t]` predicts `token_ids[:, t]`."""
    rows = np.repeat(prefix, len(token_ids), axis=0)
    full = np.concatenate([rows, token_ids], axis=1)
    logits = model({"token_ids": full, "padding_mask": np.ones_like(full)})
    return keras.ops.convert_to_numpy(logits)[:, prefix.shape[1] - 1 :]


def assert_greedy_one_go(out, inputs, logits):
    """`out` keeps the prompts, and every generated token is the argmax of
    the one-go logits before it: the greedy continuation of prefix +
    prompt (by causality, as from repeated full forwards)."""
    predicted = logits.argmax(-1)
    for row, mask in enumerate(inputs["padding_mask"]):
        n = int(mask.sum())
        np.testing.assert_array_equal(
            out[row, :n], inputs["token_ids"][row, :n]
        )
        np.testing.assert_array_equal(out[row, n:], predicted[row, n:LENGTH])


def assert_state_continues(model, state, prefix, inputs):
    """`generate` from `state` (of `prefix`) is greedy over prefix + prompt,
    and `score` from it gives the one-go logits of what it generated."""
    out = model.generate(inputs, stop_token_ids=None, prefix_state=state)
    out = out["token_ids"]
    expected = one_go_logits(model, prefix, out)
    assert_greedy_one_go(out, inputs, expected)
    logits = model.score(out, prefix_state=state)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits),
        expected[:, 1:],
        atol=1e-5,
        rtol=1e-5,
    )


def count_traces(model):
    """Counts traces of `generate_step` generating (not prefilling a
    state); calls on eager backends."""
    counter = {"n": 0}
    step = model.generate_step

    def counted(inputs, *args, **kwargs):
        counter["n"] += "state_tokens" not in inputs
        return step(inputs, *args, **kwargs)

    model.generate_step = counted
    model.generate_function = None
    return counter


def test_generate_from_reused_and_reloaded_state_equals_one_go(tmp_path):
    model = causal_lm(chunk_size=4)
    traces = count_traces(model)
    prefix = ids((1, PREFIX), seed=1)
    state = model.prefill_state(prefix).repeat(3)
    state.save(tmp_path / "state.npz")
    reloaded = MegaPrefixState.load(tmp_path / "state.npz")
    other_prefix = ids((1, PREFIX + 3), seed=2)
    other_state = model.prefill_state(other_prefix).repeat(3)

    runs = [
        (state, prefix, continuations(seed=3)),
        (state, prefix, continuations(seed=4)),  # the same state, reused
        (reloaded, prefix, continuations(seed=5)),
        (other_state, other_prefix, continuations(seed=6)),
    ]
    for prefix_state, rows, inputs in runs:
        assert_state_continues(model, prefix_state, rows, inputs)
    if keras.config.backend() != "torch":
        # Compiled once: the state (values and prefix length) is an
        # argument of the compiled function, not a constant baked into it.
        assert traces["n"] == 1
    # And equal to keras-hub's own generate over prefix + prompt.
    inputs = continuations(seed=3)
    full = {
        "token_ids": np.concatenate(
            [np.repeat(prefix, 3, 0), inputs["token_ids"]], 1
        ),
        "padding_mask": np.concatenate(
            [np.ones((3, PREFIX), bool), inputs["padding_mask"]], 1
        ),
    }
    reference = model.generate(full, stop_token_ids=None)
    out = model.generate(inputs, stop_token_ids=None, prefix_state=state)
    np.testing.assert_array_equal(
        out["token_ids"], np.asarray(reference["token_ids"])[:, PREFIX:]
    )


def test_unchunked_state_generate_and_score():
    model = causal_lm()
    prefix = ids((1, PREFIX), seed=1)
    state = model.prefill_state(prefix, max_length=PREFIX + LENGTH)
    assert state.window == PREFIX + LENGTH
    assert_state_continues(model, state.repeat(3), prefix, continuations(3))


@pytest.mark.parametrize("chunk_size", [4, None])
def test_score_from_state_equals_one_go(chunk_size):
    model = causal_lm(chunk_size=chunk_size)
    prefix = ids((2, PREFIX), seed=1)
    tokens = ids((2, 7), seed=2)
    state = model.prefill_state(prefix)
    full = np.concatenate([prefix, tokens], axis=1)
    logits = keras.ops.convert_to_numpy(
        model({"token_ids": full, "padding_mask": np.ones_like(full)})
    )
    got = model.score(tokens, prefix_state=state)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), logits[:, PREFIX:], atol=1e-5
    )
    # Log-probabilities of the tokens themselves, the first one included.
    log_probs = model.score(
        tokens, prefix_state=state, scoring_mode="log_probs"
    )
    expected = keras.ops.convert_to_numpy(
        keras.ops.log_softmax(logits[:, PREFIX - 1 : -1], axis=-1)
    )
    expected = np.take_along_axis(expected, tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(log_probs), expected, atol=1e-5
    )
    # Per-token loss, keras-hub's mode.
    loss = model.score(
        tokens,
        prefix_state=state,
        scoring_mode="loss",
        target_ids=np.roll(tokens, -1, axis=1),
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss)[:, :-1], -expected[:, 1:], atol=1e-5
    )
    # Without a state: the full forward.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.score(full)), logits, atol=1e-6
    )
    # Extending a state equals prefilling the longer prefix.
    extended = model.prefill_state(tokens[:, :4], prefix_state=state)
    direct = model.prefill_state(full[:, : PREFIX + 4], max_length=32)
    assert extended.position == direct.position == PREFIX + 4
    # Slots not fed yet (the last token's and later) are masked: skip them.
    fed = (PREFIX + 3) % chunk_size if chunk_size else PREFIX + 3
    for entry, direct_entry in zip(extended.layers, direct.layers):
        for i, (t, u) in enumerate(zip(entry, direct_entry)):
            t, u = keras.ops.convert_to_numpy(t), keras.ops.convert_to_numpy(u)
            if i:
                t, u = t[:, :fed], u[:, :fed]
            np.testing.assert_allclose(t, u, atol=1e-5)


def test_chunked_state_size_does_not_depend_on_prefix_length():
    model = causal_lm(chunk_size=4)
    sizes, shapes = [], []
    for length in (5, 40):
        state = model.prefill_state(ids((2, length), seed=length))
        sizes.append(state.nbytes)
        shapes.append([tuple(t.shape) for entry in state.layers for t in entry])
    assert sizes[0] == sizes[1]
    assert shapes[0] == shapes[1]
    # Two layers of EMA [2, 16, 4] f32, keys [2, 4, 8], values [2, 4, 24].
    assert sizes[0] == 2 * 4 * 2 * (16 * 4 + 4 * 8 + 4 * 24)


def test_save_load_round_trip_is_exact_and_ema_state_stays_float32(tmp_path):
    model = causal_lm(chunk_size=4, dtype="mixed_bfloat16")
    state = model.prefill_state(ids((2, PREFIX), seed=1))
    path = tmp_path / "state.npz"
    state.save(path)
    loaded = MegaPrefixState.load(path)
    for entry, loaded_entry in zip(state.layers, loaded.layers):
        dtypes = [keras.backend.standardize_dtype(t.dtype) for t in entry]
        assert dtypes == ["float32", "bfloat16", "bfloat16"]
        for t, u in zip(entry, loaded_entry):
            assert keras.backend.standardize_dtype(u.dtype) == (
                keras.backend.standardize_dtype(t.dtype)
            )
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")),
                keras.ops.convert_to_numpy(keras.ops.cast(u, "float32")),
            )
    assert (loaded.position, loaded.window, loaded.chunk_size) == (
        PREFIX,
        4,
        4,
    )
    loaded.check(model, batch_size=2)


def test_bad_states_and_inputs_raise(tmp_path):
    model = causal_lm(chunk_size=4)
    state = model.prefill_state(ids((2, PREFIX), seed=1))
    tokens = ids((2, 3), seed=2)

    other = causal_lm(chunk_size=4, ema_dim=2)
    with pytest.raises(ValueError, match="another configuration"):
        other.score(tokens, prefix_state=state)
    same_config = causal_lm(chunk_size=4)  # other random weights
    with pytest.raises(ValueError, match="other weights"):
        same_config.generate(
            {"token_ids": tokens, "padding_mask": np.ones_like(tokens)},
            stop_token_ids=None,
            prefix_state=state,
        )
    with pytest.raises(ValueError, match="batch size 2, the continuations 3"):
        model.score(ids((3, 3), seed=3), prefix_state=state)
    single = model.prefill_state(ids((1, PREFIX), seed=1))
    with pytest.raises(ValueError, match=r"state.repeat\(3\)"):
        model.score(ids((3, 3), seed=3), prefix_state=single)
    with pytest.raises(ValueError, match="batch size 1"):
        state.repeat(4)
    with pytest.raises(ValueError, match="no padding"):
        model.prefill_state(
            {"token_ids": tokens, "padding_mask": np.array([[1, 1, 0]] * 2)}
        )
    with pytest.raises(ValueError, match="right-padded"):
        model.generate(
            {"token_ids": tokens, "padding_mask": np.array([[0, 1, 1]] * 2)},
            stop_token_ids=None,
            prefix_state=state,
        )
    with pytest.raises(ValueError, match="log_probs' needs a prefix_state"):
        model.score(tokens, scoring_mode="log_probs")

    # Unchunked: the state holds `max_length` positions.
    unchunked = causal_lm()
    with pytest.raises(ValueError, match=r"40 tokens, more than the 32.*"):
        unchunked.prefill_state(ids((1, 40), seed=1))
    with pytest.raises(ValueError, match=r"max_length=N.*chunk_size"):
        unchunked.prefill_state(ids((1, 20), seed=1), max_length=16)
    small = unchunked.prefill_state(ids((2, PREFIX), seed=1), max_length=14)
    with pytest.raises(ValueError, match=r"need 17 positions.*the 14"):
        unchunked.score(ids((2, 6), seed=2), prefix_state=small)
    # Saved and loaded, the state still knows its model.
    small.save(tmp_path / "small.npz")
    with pytest.raises(ValueError, match="another configuration"):
        model.score(
            tokens, prefix_state=MegaPrefixState.load(tmp_path / "small.npz")
        )


def test_packed_documents_backbone_state_round_trip(tmp_path):
    """A `document_packing=True` backbone's cache has two more parts per
    layer (each key's document, the last token's document and position):
    all five are saved, and scoring from the reloaded state equals the one
    forward over prefix + tokens (one document)."""
    model = causal_lm(chunk_size=4, document_packing=True)
    prefix = ids((1, PREFIX), seed=1)
    tokens = ids((1, 6), seed=2)
    state = model.prefill_state(prefix)
    assert {len(entry) for entry in state.layers} == {5}
    path = tmp_path / "state.npz"
    state.save(path)
    loaded = MegaPrefixState.load(path)
    assert [len(entry) for entry in loaded.layers] == [5, 5]
    full = np.concatenate([prefix, tokens], axis=1)
    logits = keras.ops.convert_to_numpy(
        model(
            {
                "token_ids": full,
                "padding_mask": np.ones_like(full),
                "document_ids": np.zeros_like(full),
            }
        )
    )
    got = model.score(tokens, prefix_state=loaded)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), logits[:, PREFIX:], atol=1e-5
    )
