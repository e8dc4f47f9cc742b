"""Property-based parity: random valid MegaConfigs and padded batches.

A fixed, small number of examples runs in CI; `--run-large` runs many more.
A failure that hypothesis shrinks to a minimal config belongs in
test_backbone_hf_parity.py as a regular case.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mega_fixtures import assert_close
from mega_fixtures import hf_hidden
from mega_fixtures import make_hf_model
from mega_fixtures import torch

from keras_mega.models import MegaBackbone


def _settings(examples):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


@st.composite
def mega_configs(draw):
    decoder = draw(st.booleans())
    chunking = draw(st.booleans())
    cross = decoder and draw(st.booleans())
    norm = draw(
        st.sampled_from(["scalenorm", "layernorm", "rmsnorm", "batchnorm"])
    )
    config = dict(
        hidden_size=draw(st.sampled_from([8, 16])),
        intermediate_size=draw(st.sampled_from([8, 12])),
        shared_representation_size=draw(st.sampled_from([4, 6])),
        ema_projection_size=draw(st.integers(1, 4)),
        nffn_hidden_size=draw(st.sampled_from([6, 10])),
        num_hidden_layers=draw(st.integers(1, 2)),
        is_decoder=decoder,
        bidirectional=(not decoder) and draw(st.booleans()),
        use_chunking=chunking,
        chunk_size=draw(st.integers(2, 5)) if chunking else -1,
        truncation=draw(st.one_of(st.none(), st.integers(1, 8))),
        attention_activation=draw(
            st.sampled_from(["softmax", "laplace", "relu2"])
        ),
        relative_positional_bias=draw(st.sampled_from(["rotary", "simple"])),
        normalization_type=norm,
        # HF cannot even build layernorm without affine weights.
        norm_affine=norm == "layernorm" or draw(st.booleans()),
        normalize_before_mega=draw(st.booleans()),
        normalize_before_ffn=draw(st.booleans()),
        use_normalized_ffn=draw(st.booleans()),
        activation=draw(st.sampled_from(["silu", "relu", "gelu", "tanh"])),
        add_token_type_embeddings=draw(st.booleans()),
        add_cross_attention=cross,
        max_positions=64,
    )
    if cross and chunking:
        # HF sizes the cross attention's simple bias by the chunk.
        config["relative_positional_bias"] = "rotary"
    batch = draw(st.integers(1, 3))
    length = draw(st.integers(1, 11))
    lengths = [draw(st.integers(1, length)) for _ in range(batch)]
    return config, lengths, length, draw(st.integers(0, 2**16))


def _check_parity(case, tmp_path):
    config, lengths, length, seed = case
    hf = make_hf_model(tmp_path, seed=seed % 7, **config)
    backbone = MegaBackbone.from_preset(str(tmp_path))
    rng = np.random.default_rng(seed)
    batch = len(lengths)
    ids = rng.integers(3, 48, (batch, length)).astype("int32")
    mask = (np.arange(length)[None] < np.array(lengths)[:, None]).astype(
        "int32"
    )
    ids[mask == 0] = 1
    inputs = {"token_ids": ids, "padding_mask": mask}
    kwargs = {}
    if config["add_token_type_embeddings"]:
        inputs["segment_ids"] = rng.integers(0, 2, ids.shape).astype("int32")
        kwargs["token_type_ids"] = torch.tensor(inputs["segment_ids"]).long()
    if config["add_cross_attention"]:
        d = config["hidden_size"]
        encoder = rng.normal(size=(batch, 5, d)).astype("float32")
        encoder_mask = np.ones((batch, 5), "int32")
        encoder_mask[0, 3:] = 0
        inputs["encoder_sequence_output"] = encoder
        inputs["encoder_padding_mask"] = encoder_mask
        kwargs["encoder_hidden_states"] = torch.tensor(encoder)
        kwargs["encoder_attention_mask"] = torch.tensor(encoder_mask).long()
    # HF needs a chunk multiple: give it the padded input we pad to.
    hf_ids, hf_mask = ids, mask
    if config["use_chunking"]:
        pad = -length % config["chunk_size"]
        hf_ids = np.pad(ids, [(0, 0), (0, pad)], constant_values=1)
        hf_mask = np.pad(mask, [(0, 0), (0, pad)])
        if "token_type_ids" in kwargs:
            kwargs["token_type_ids"] = torch.nn.functional.pad(
                kwargs["token_type_ids"], (0, pad)
            )
    expected = hf_hidden(hf, hf_ids, hf_mask, **kwargs).last_hidden_state
    expected = expected.numpy()[:, :length]
    actual = backbone(inputs, training=False)
    assert_close(actual, expected, mask=mask)


@pytest.mark.parametrize("examples", [5])
def test_random_configs_match_hf(examples, tmp_path_factory):
    @_settings(examples)
    @given(mega_configs())
    def check(case):
        _check_parity(case, tmp_path_factory.mktemp("hf"))

    check()


@pytest.mark.large
def test_random_configs_match_hf_many(tmp_path_factory):
    @_settings(300)
    @given(mega_configs())
    def check(case):
        _check_parity(case, tmp_path_factory.mktemp("hf"))

    check()


@st.composite
def decoder_configs(draw):
    chunk = draw(st.one_of(st.none(), st.integers(1, 6)))
    config = dict(
        vocabulary_size=32,
        num_layers=draw(st.integers(1, 2)),
        hidden_dim=8,
        intermediate_dim=draw(st.sampled_from([8, 12])),
        shared_dim=4,
        ema_dim=draw(st.integers(1, 4)),
        ffn_dim=8,
        causal=True,
        bidirectional=False,
        chunk_size=chunk,
        attention_activation=draw(
            st.sampled_from(["softmax", "laplace", "relu2"])
        ),
        relative_position_bias=draw(st.sampled_from(["rotary", "simple"])),
        normalization_type=draw(
            st.sampled_from(["scalenorm", "layernorm", "rmsnorm"])
        ),
        normalize_before_attention=draw(st.booleans()),
        use_normalized_ffn=draw(st.booleans()),
        max_sequence_length=32,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )
    length = draw(st.integers(2, 16))
    prompt = draw(st.integers(1, length - 1))
    blocks = []
    remaining = length - prompt
    while remaining:
        size = draw(st.integers(1, remaining))
        blocks.append(size)
        remaining -= size
    return config, length, prompt, blocks, draw(st.integers(0, 2**16))


def _check_recurrence(case):
    config, length, prompt, blocks, seed = case
    keras.utils.set_random_seed(seed)
    backbone = MegaBackbone(**config)
    ids = (
        np.random.default_rng(seed).integers(3, 32, (2, length)).astype("int32")
    )
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    expected = keras.ops.convert_to_numpy(backbone(inputs))
    _, cache = backbone.prefill(inputs, prompt, max_length=length)
    position, outputs = prompt, []
    for size in blocks:
        y, cache = backbone.call_with_cache(
            ids[:, position : position + size], cache, position
        )
        outputs.append(keras.ops.convert_to_numpy(y))
        position += size
    assert_close(np.concatenate(outputs, axis=1), expected[:, prompt:])


def test_random_decoders_cached_equals_full_forward():
    @_settings(6)
    @given(decoder_configs())
    def check(case):
        _check_recurrence(case)

    check()


@pytest.mark.large
def test_random_decoders_cached_equals_full_forward_many():
    @_settings(300)
    @given(decoder_configs())
    def check(case):
        _check_recurrence(case)

    check()
