"""Decoding with a cache equals the full forward (the backbone level)."""

import keras
import numpy as np
import pytest
from mega_fixtures import CAUSAL
from mega_fixtures import assert_close
from mega_fixtures import hf_hidden
from mega_fixtures import make_hf_model
from mega_fixtures import tiny_config
from mega_fixtures import torch

from keras_mega.models import MegaBackbone

LENGTH = 14  # crosses three boundaries of chunk 4


def decoder(**kwargs):
    config = tiny_config(max_sequence_length=32, **CAUSAL)
    return MegaBackbone(**{**config, **kwargs})


def _ids(batch=2, length=LENGTH, seed=0):
    return (
        np.random.default_rng(seed)
        .integers(3, 48, (batch, length))
        .astype("int32")
    )


def _full(backbone, ids):
    return keras.ops.convert_to_numpy(
        backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    )


def _feed(backbone, ids, cache, start, sizes):
    outputs, position = [], start
    for size in sizes:
        y, cache = backbone.call_with_cache(
            ids[:, position : position + size], cache, position
        )
        outputs.append(keras.ops.convert_to_numpy(y))
        position += size
    return np.concatenate(outputs, axis=1), cache


VARIANTS = {
    "softmax_rotary_chunked": dict(chunk_size=4),
    "softmax_simple_chunked": dict(
        chunk_size=4, relative_position_bias="simple"
    ),
    "laplace_rotary_chunked": dict(
        chunk_size=4, attention_activation="laplace"
    ),
    "laplace_simple_chunked": dict(
        chunk_size=4,
        attention_activation="laplace",
        relative_position_bias="simple",
    ),
    "relu2_chunked_layernorm": dict(
        chunk_size=4,
        attention_activation="relu2",
        normalization_type="layernorm",
    ),
    "softmax_rotary_full": dict(),
    "laplace_simple_full": dict(
        attention_activation="laplace", relative_position_bias="simple"
    ),
    "postnorm_no_ffn": dict(
        chunk_size=4, normalize_before_attention=False, use_normalized_ffn=False
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_token_by_token_equals_full_forward(name):
    backbone = decoder(**VARIANTS[name])
    ids = _ids()
    expected = _full(backbone, ids)
    cache = backbone.empty_cache(2, LENGTH)
    actual, _ = _feed(backbone, ids, cache, 0, [1] * LENGTH)
    assert_close(actual, expected)


@pytest.mark.parametrize("position", [1, 5, 8, 13])
def test_prefill_then_tokens_equals_full_forward(position):
    backbone = decoder(chunk_size=4, attention_activation="laplace")
    ids = _ids()
    expected = _full(backbone, ids)
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    hidden, cache = backbone.prefill(inputs, position)
    assert_close(hidden, expected)
    actual, _ = _feed(backbone, ids, cache, position, [1] * (LENGTH - position))
    assert_close(actual, expected[:, position:])


def test_prefill_ignores_tokens_after_position_and_padding():
    """The cache before `position` cannot see later tokens or padding."""
    backbone = decoder(chunk_size=4)
    ids = _ids()
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    _, cache = backbone.prefill({"token_ids": ids, "padding_mask": mask}, 7)
    other = ids.copy()
    other[:, 7:] = 5
    _, same = backbone.prefill(
        {"token_ids": other, "padding_mask": np.ones_like(ids)}, 7
    )
    for a, b in zip(cache, same):
        for x, y in zip(a, b):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(x),
                keras.ops.convert_to_numpy(y),
                atol=1e-6,
            )


@pytest.mark.parametrize("chunk_size", [4, None])
def test_blocks_equal_token_by_token(chunk_size):
    backbone = decoder(chunk_size=chunk_size, relative_position_bias="simple")
    ids = _ids()
    one, _ = _feed(
        backbone, ids, backbone.empty_cache(2, LENGTH), 0, [1] * LENGTH
    )
    # Blocks that start mid-chunk, span one or several boundaries.
    blocks, _ = _feed(
        backbone, ids, backbone.empty_cache(2, LENGTH), 0, [3, 6, 1, 4]
    )
    assert_close(blocks, one)


def test_chunked_cache_size_does_not_grow():
    backbone = decoder(chunk_size=4)
    sizes = []
    for length in (8, 64):
        ids = _ids(length=length)
        _, cache = _feed(
            backbone, ids, backbone.empty_cache(2, length), 0, [1] * length
        )
        sizes.append([tuple(t.shape) for layer in cache for t in layer])
    assert sizes[0] == sizes[1]
    assert sizes[0][0] == (2, 16, 4)  # EMA state [B, D, N]
    assert sizes[0][1] == (2, 4, 8)  # one chunk of keys


def test_unchunked_cache_refuses_positions_past_its_end():
    # Slot = position without chunking: a block past the end would be
    # clamped into the last slots (slice_update), so it raises instead.
    backbone = decoder()
    ids = _ids(length=8)
    _, cache = _feed(backbone, ids, backbone.empty_cache(2, 8), 0, [4, 3])
    with pytest.raises(ValueError, match="do not fit the cache.*max_length"):
        backbone.call_with_cache(ids[:, :2], cache, 7)


def test_ema_state_stays_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    backbone = decoder(chunk_size=4)
    ids = _ids()
    _, cache = _feed(backbone, ids, backbone.empty_cache(2, LENGTH), 0, [1] * 6)
    assert keras.backend.standardize_dtype(cache[0][0].dtype) == "float32"
    assert keras.backend.standardize_dtype(cache[0][1].dtype) == "bfloat16"


def test_encoder_model_refuses_cache():
    backbone = decoder(causal=False, bidirectional=True)
    with pytest.raises(ValueError, match="causal=True, bidirectional=False"):
        backbone.empty_cache(2, 8)


def test_decoding_matches_hf_unchunked_cache(tmp_path):
    """HF's own cached decoding (unchunked; chunked crashes in HF)."""
    hf = make_hf_model(tmp_path, is_decoder=True, bidirectional=False)
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids = _ids(length=9)
    past, expected = None, []
    with torch.no_grad():
        for t in range(9):
            out = hf(
                input_ids=torch.tensor(ids[:, t : t + 1]).long(),
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            expected.append(out.last_hidden_state.numpy())
    actual, _ = _feed(backbone, ids, backbone.empty_cache(2, 9), 0, [1] * 9)
    assert_close(actual, np.concatenate(expected, axis=1))
    assert_close(
        actual, hf_hidden(hf, ids, np.ones_like(ids)).last_hidden_state.numpy()
    )
