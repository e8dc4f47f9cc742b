"""MegaCausalLM.generate with the recurrent cache."""

import keras
import numpy as np
import pytest
from mega_fixtures import CAUSAL
from mega_fixtures import make_hf_model
from mega_fixtures import tiny_config
from mega_fixtures import tiny_tokenizer
from mega_fixtures import torch

from keras_mega.models import MegaBackbone
from keras_mega.models import MegaCausalLM
from keras_mega.models import MegaCausalLMPreprocessor

LENGTH = 14
PROMPT_LENGTHS = [3, 6, 5]


def causal_lm(vocabulary_size=48, **kwargs):
    config = tiny_config(vocabulary_size=vocabulary_size, **CAUSAL)
    return MegaCausalLM(MegaBackbone(**{**config, **kwargs}))


def prompts(vocabulary_size=48, lengths=PROMPT_LENGTHS, length=LENGTH):
    ids = np.random.default_rng(0).integers(
        3, vocabulary_size, (len(lengths), length)
    )
    mask = np.arange(length)[None] < np.array(lengths)[:, None]
    return {
        "token_ids": np.where(mask, ids, 1).astype("int32"),
        "padding_mask": mask.astype("int32"),
    }


def greedy_by_full_forwards(logits_fn, ids, lengths, length):
    """Greedy decoding by one full (uncached) forward per token.

    Each forward sees the whole row, the positions not decoded yet filled
    with token 1: the model is causal, so they cannot change the logits at
    the last decoded position, and every forward has one shape (JAX and
    TensorFlow trace once instead of once per length).
    """
    rows = []
    for row, n in enumerate(lengths):
        seq = list(ids[row, :n])
        while len(seq) < length:
            padded = np.array([seq + [1] * (length - len(seq))], "int32")
            logits = logits_fn(padded)[0, len(seq) - 1]
            seq.append(int(logits.argmax()))
        rows.append(seq)
    return np.array(rows)


def _keras_logits(model):
    def logits(x):
        out = model({"token_ids": x, "padding_mask": np.ones_like(x)})
        return keras.ops.convert_to_numpy(out)

    return logits


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(chunk_size=4),
        dict(
            chunk_size=4,
            attention_activation="laplace",
            relative_position_bias="simple",
            max_sequence_length=32,
        ),
        dict(),
    ],
    ids=["chunked", "chunked_laplace_simple", "full"],
)
def test_greedy_generate_equals_repeated_full_forwards(kwargs):
    model = causal_lm(**kwargs)
    model.compile(sampler="greedy")
    inputs = prompts()
    out = model.generate(inputs, stop_token_ids=None)
    expected = greedy_by_full_forwards(
        _keras_logits(model), inputs["token_ids"], PROMPT_LENGTHS, LENGTH
    )
    np.testing.assert_array_equal(np.asarray(out["token_ids"]), expected)


def test_generate_equals_hf_greedy_continuation(tmp_path):
    hf = make_hf_model(
        tmp_path, cls="MegaForCausalLM", is_decoder=True, bidirectional=False
    )
    model = MegaCausalLM.from_preset(str(tmp_path), preprocessor=None)
    model.compile(sampler="greedy")
    inputs = prompts()
    out = model.generate(inputs, stop_token_ids=None)

    def hf_logits(x):
        with torch.no_grad():
            return hf(
                input_ids=torch.tensor(x).long(), use_cache=False
            ).logits.numpy()

    expected = greedy_by_full_forwards(
        hf_logits, inputs["token_ids"], PROMPT_LENGTHS, LENGTH
    )
    np.testing.assert_array_equal(np.asarray(out["token_ids"]), expected)


def test_cached_logits_equal_full_forward_after_the_prefill_trap():
    """keras-hub re-feeds token `min(lengths) - 1`: it must count once."""
    model = causal_lm(chunk_size=4)
    inputs = prompts()
    # Tokens fed after the prompts count as real, as in generation.
    ids = inputs["token_ids"]
    full = keras.ops.convert_to_numpy(
        model({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    )
    _, cache = model._build_cache(inputs["token_ids"], inputs["padding_mask"])
    index = min(PROMPT_LENGTHS)
    for position in range(index - 1, LENGTH):
        token = inputs["token_ids"][:, position : position + 1]
        logits, _, cache = model.call_with_cache(token, cache, position)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(logits)[:, 0],
            full[:, position],
            atol=1e-5,
            rtol=1e-5,
        )


def test_block_scoring_equals_full_forward():
    model = causal_lm(chunk_size=4)
    inputs = prompts(lengths=[LENGTH] * 2)
    full = keras.ops.convert_to_numpy(model(inputs))
    cache = model.backbone.empty_cache(2, LENGTH)
    pieces, position = [], 0
    for size in (5, 1, 8):
        block = inputs["token_ids"][:, position : position + size]
        logits, _, cache = model.call_with_cache(block, cache, position)
        pieces.append(keras.ops.convert_to_numpy(logits))
        position += size
    np.testing.assert_allclose(
        np.concatenate(pieces, 1), full, atol=1e-5, rtol=1e-5
    )


def test_cache_size_does_not_depend_on_generation_length():
    model = causal_lm(chunk_size=4)
    shapes = []
    for length in (16, 64):
        inputs = prompts(length=length)
        _, cache = model._build_cache(
            inputs["token_ids"], inputs["padding_mask"]
        )
        shapes.append([tuple(t.shape) for layer in cache for t in layer])
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("sampler", ["top_k", "top_p", "beam", "random"])
def test_samplers_keep_prompts_and_vocabulary(sampler):
    model = causal_lm(chunk_size=4)
    model.compile(sampler=sampler)
    inputs = prompts()
    out = np.asarray(model.generate(inputs, stop_token_ids=None)["token_ids"])
    assert out.shape == (3, LENGTH)
    assert ((out >= 0) & (out < 48)).all()
    for row, n in enumerate(PROMPT_LENGTHS):
        np.testing.assert_array_equal(
            out[row, :n], inputs["token_ids"][row, :n]
        )


def test_stop_tokens_end_rows():
    model = causal_lm(chunk_size=4)
    model.compile(sampler="greedy")
    inputs = prompts()
    free = np.asarray(model.generate(inputs, stop_token_ids=None)["token_ids"])
    end = PROMPT_LENGTHS[0]
    stop = int(free[0, end])  # the first generated token of row 0
    out = model.generate(inputs, stop_token_ids=[stop])
    ids, mask = np.asarray(out["token_ids"]), np.asarray(out["padding_mask"])
    assert ids[0, end] == stop and mask[0, end]
    assert not mask[0, end + 1 :].any()


def test_generate_from_raw_strings(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    preprocessor = MegaCausalLMPreprocessor(tokenizer, sequence_length=12)
    model = causal_lm(vocabulary_size=tokenizer.vocabulary_size(), chunk_size=4)
    model.preprocessor = preprocessor
    model.compile(sampler="greedy")
    texts = model.generate(["the quick brown", "a cat"], max_length=12)
    assert len(texts) == 2
    assert texts[0].startswith("the quick brown")
    stripped = model.generate(
        ["the quick brown"], max_length=12, strip_prompt=True
    )
    assert not stripped[0].startswith("the quick brown")
