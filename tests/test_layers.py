"""Each Mega layer against its HF submodule, its recurrent form, its config."""

import keras
import numpy as np
import pytest
from mega_fixtures import assert_close
from mega_fixtures import make_hf_model
from mega_fixtures import torch

from keras_mega import layers
from keras_mega.convert import hf as convert

B, L, D = 2, 9, 16


def _state(module, prefix="m"):
    return {
        f"{prefix}.{k}": v.float().numpy()
        for k, v in module.state_dict().items()
    }


def _load(weight_map, module, prefix="m"):
    convert.load_weights(
        weight_map, _state(module, prefix), owned_prefixes=(prefix,)
    )


def _x(seed=0, shape=(B, L, D)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _mask():
    mask = np.ones((B, L), "int32")
    mask[1, 6:] = 0
    return mask


def _time_major(x):
    return torch.tensor(np.transpose(x, (1, 0, 2)))


def _batch_major(t):
    return np.transpose(t.detach().numpy(), (1, 0, 2))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("truncation", [None, 4])
def test_ema_matches_hf(bidirectional, truncation):
    hf = make_hf_model(bidirectional=bidirectional, truncation=truncation)
    module = hf.layers[0].mega_layer.ema_gate
    ema = layers.MegaEMA(
        D, ema_dim=4, bidirectional=bidirectional, truncation=truncation
    )
    ema.build((None, None, D))
    _load(convert.ema_weight_map(ema, "m"), module)
    x, mask = _x(), _mask()
    with torch.no_grad():
        expected, _ = module(_time_major(x), torch.tensor(mask))
    actual = ema(x, padding_mask=mask)
    assert_close(actual, _batch_major(expected))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_ema_matches_hf_across_blocks(bidirectional):
    # 150 steps: two full blocks of 64 and a front-padded one, padding inside.
    hf = make_hf_model(bidirectional=bidirectional)
    module = hf.layers[0].mega_layer.ema_gate
    ema = layers.MegaEMA(D, ema_dim=4, bidirectional=bidirectional)
    ema.build((None, None, D))
    _load(convert.ema_weight_map(ema, "m"), module)
    x = _x(3, (B, 150, D))
    mask = np.ones((B, 150), "int32")
    mask[1, 100:] = 0
    with torch.no_grad():
        expected, _ = module(_time_major(x), torch.tensor(mask))
    assert_close(ema(x, padding_mask=mask), _batch_major(expected))


@pytest.mark.parametrize(
    "length,block", [(1, 4), (7, 4), (8, 4), (37, 4), (9, 64)]
)
def test_block_ema_equals_fft_and_state(length, block):
    from keras_mega.layers.ema_convolution import block_ema
    from keras_mega.layers.ema_convolution import fft_convolution

    ema = layers.MegaEMA(D, ema_dim=4, ema_init="timescales")
    ema.build((None, None, D))
    x = _x(4, (B, length, D))
    u = keras.ops.transpose(x, (2, 0, 1))
    y, state = block_ema(u, *ema.coefficients(), block=block)
    assert_close(y, fft_convolution(u, ema.kernel(length)))
    assert_close(state, ema.state_at(x, length))


@pytest.mark.parametrize("blocks", [[9], [1] * 9, [4, 1, 4], [2, 7]])
def test_ema_recurrence_equals_fft(blocks):
    ema = layers.MegaEMA(D, ema_dim=4)
    x = _x(1)
    expected = keras.ops.convert_to_numpy(ema(x))
    state, outputs, start = None, [], 0
    for size in blocks:
        y, state = ema.step(x[:, start : start + size], state)
        outputs.append(keras.ops.convert_to_numpy(y))
        start += size
    assert keras.ops.shape(state) == (B, D, 4)
    assert_close(np.concatenate(outputs, axis=1), expected)


def test_ema_token_steps_with_padding_equal_the_masked_call():
    """One token at a time (the single-token recurrence) with a padding
    mask: padded tokens count as zero, as in `call()`."""
    ema = layers.MegaEMA(D, ema_dim=4)
    x, mask = _x(4), _mask()
    expected = keras.ops.convert_to_numpy(ema(x, padding_mask=mask))
    state, outputs = None, []
    for t in range(L):
        y, state = ema.step(x[:, t : t + 1], state, mask[:, t : t + 1])
        outputs.append(keras.ops.convert_to_numpy(y))
    assert_close(np.concatenate(outputs, axis=1), expected)


def test_ema_step_matches_hf_incremental_state():
    hf = make_hf_model(bidirectional=False, is_decoder=True)
    module = hf.layers[0].mega_layer.ema_gate
    ema = layers.MegaEMA(D, ema_dim=4)
    ema.build((None, None, D))
    _load(convert.ema_weight_map(ema, "m"), module)
    x = _x(2)
    with torch.no_grad():
        _, hf_state = module(_time_major(x[:, :5]), use_cache=True)
        hf_y, _ = module(
            _time_major(x[:, 5:6]), prev_state=hf_state, use_cache=True
        )
    _, state = ema.step(x[:, :5])
    assert_close(state, hf_state.numpy())
    y, _ = ema.step(x[:, 5:6], state)
    assert_close(y, _batch_major(hf_y))


def test_bidirectional_ema_has_no_recurrence():
    ema = layers.MegaEMA(D, ema_dim=4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        ema.step(_x())


GATED_CASES = {
    "encoder_rotary": dict(),
    "decoder_chunked_simple": dict(
        is_decoder=True,
        bidirectional=False,
        use_chunking=True,
        chunk_size=3,
        relative_positional_bias="simple",
    ),
    "laplace_postnorm_layernorm": dict(
        attention_activation="laplace",
        normalize_before_mega=False,
        normalization_type="layernorm",
    ),
    "relu2_batchnorm": dict(
        attention_activation="relu2", normalization_type="batchnorm"
    ),
}


def _gated_from_hf_config(config):
    return layers.MegaGatedAttention(
        D,
        config.intermediate_size,
        shared_dim=config.shared_representation_size,
        ema_dim=config.ema_projection_size,
        bidirectional=config.bidirectional,
        causal=config.is_decoder,
        chunk_size=config.chunk_size if config.use_chunking else None,
        attention_activation=config.attention_activation,
        relative_position_bias=config.relative_positional_bias,
        max_sequence_length=config.max_positions,
        normalization_type=config.normalization_type,
        normalize_before=config.normalize_before_mega,
    )


@pytest.mark.parametrize("name", sorted(GATED_CASES))
def test_gated_attention_matches_hf(name):
    hf = make_hf_model(**GATED_CASES[name])
    config = hf.config
    module = hf.layers[0].mega_layer
    layer = _gated_from_hf_config(config)
    layer.build((None, None, D))
    _load(convert.gated_attention_weight_map(layer, "m"), module)
    length = 9 if not config.use_chunking else 9
    x, mask = _x(3, (B, length, D)), _mask()
    causal = None
    if config.is_decoder:
        size = config.chunk_size if config.use_chunking else length
        causal = torch.tril(torch.ones(size, size, dtype=torch.long))
    with torch.no_grad():
        expected = module(
            _time_major(x), padding_mask=torch.tensor(mask), causal_mask=causal
        )[0]
    assert_close(layer(x, padding_mask=mask), _batch_major(expected), mask=mask)


def test_gated_attention_returns_per_chunk_weights_like_hf():
    hf = make_hf_model(use_chunking=True, chunk_size=3)
    module = hf.layers[0].mega_layer
    layer = _gated_from_hf_config(hf.config)
    layer.build((None, None, D))
    _load(convert.gated_attention_weight_map(layer, "m"), module)
    x = _x(4)
    with torch.no_grad():
        _, expected = module(_time_major(x), output_attentions=True)
    _, weights = layer(x, return_attention_scores=True)
    assert keras.ops.shape(weights) == (B, 3, 3, 3)
    assert_close(weights, expected.numpy())


@pytest.mark.parametrize("activation", ["softmax", "laplace"])
def test_cross_attention_matches_hf(activation):
    hf = make_hf_model(
        is_decoder=True,
        bidirectional=False,
        add_cross_attention=True,
        attention_activation=activation,
    )
    module = hf.layers[0].cross_attn
    layer = layers.MegaCrossAttention(
        D, shared_dim=8, attention_activation=activation
    )
    layer.build((None, None, D))
    _load(convert.cross_attention_weight_map(layer, "m"), module)
    x, encoder = _x(5, (B, 5, D)), _x(6, (B, 7, D))
    encoder_mask = np.ones((B, 7), "int32")
    encoder_mask[0, 4:] = 0
    with torch.no_grad():
        expected = module(
            _time_major(x),
            _time_major(encoder),
            _time_major(encoder),
            key_padding_mask=torch.tensor(encoder_mask),
        )[0]
    actual = layer(x, encoder, encoder_padding_mask=encoder_mask)
    assert_close(actual, _batch_major(expected))


@pytest.mark.parametrize("prenorm", [True, False])
def test_normalized_ffn_matches_hf(prenorm):
    hf = make_hf_model(normalize_before_ffn=prenorm, activation="gelu")
    module = hf.layers[0].nffn
    layer = layers.NormalizedFFN(
        D, 20, normalize_before=prenorm, activation="gelu"
    )
    layer.build((None, None, D))
    _load(convert.normalized_ffn_weight_map(layer, "m"), module)
    x = _x(7)
    with torch.no_grad():
        expected = module(_time_major(x))
    assert_close(layer(x), _batch_major(expected))


def test_norms_compute_their_formulas():
    x = _x(8)
    ms = np.mean(x.astype("float64") ** 2, axis=-1, keepdims=True)
    scale = layers.ScaleNorm()
    scale.build(x.shape)
    scale.scalar.assign([1.5])
    assert_close(scale(x), 1.5 * x / np.sqrt(ms + 1e-5))
    rms = layers.RMSNorm()
    rms.build(x.shape)
    w = np.linspace(0.5, 2.0, D).astype("float32")
    rms.weight.assign(w)
    assert_close(rms(x), w * x / np.sqrt(ms + 1e-5))
    legacy = layers.HFRMSNorm()
    legacy.build(x.shape)
    legacy.weight.assign(w)
    assert_close(legacy(x), w * x)  # what HF's MegaRMSNorm really computes


@pytest.mark.parametrize("kind", ["simple", "rotary"])
def test_relative_position_bias_matches_hf(kind):
    hf = make_hf_model(
        relative_positional_bias=kind, use_chunking=True, chunk_size=6
    )
    module = hf.layers[0].mega_layer.rel_pos_bias
    if kind == "simple":
        layer = layers.SimpleRelativePositionBias(64, max_offset=6)
    else:
        layer = layers.RotaryRelativePositionBias(8)
    layer.build()
    _load(convert._rel_pos_bias(layer, "m"), module)
    with torch.no_grad():
        expected = module(6).numpy()
    assert_close(layer.compute_bias(6, 6), expected)
    # A query offset gives the rows of later positions (decoding).
    assert_close(layer.compute_bias(2, 6, query_offset=4), expected[4:6])


def test_simple_bias_refuses_longer_sequences():
    layer = layers.SimpleRelativePositionBias(8)
    with pytest.raises(ValueError, match="max_sequence_length"):
        layer.compute_bias(9, 9)


def test_feature_dropout_drops_whole_channels():
    layer = layers.NormalizedFFN(D, 20, dropout=0.5, feature_dropout=True)
    x = _x(9)
    layer.build(x.shape)
    residual_free = keras.ops.convert_to_numpy(
        layer.dropout_layer(np.ones((B, L, D), "float32"), training=True)
    )
    # Each (batch, channel) is dropped or kept for every position.
    assert np.all(residual_free.min(axis=1) == residual_free.max(axis=1))
    assert 0 < (residual_free[:, 0] == 0).mean() < 1


LAYER_FACTORIES = {
    "ema": lambda: layers.MegaEMA(D, ema_dim=4, truncation=5),
    "gated": lambda: layers.MegaGatedAttention(
        D,
        24,
        shared_dim=8,
        ema_dim=4,
        chunk_size=4,
        causal=True,
        relative_position_bias="simple",
        max_sequence_length=32,
        normalization_type="layernorm",
        attention_activation="laplace",
    ),
    "ffn": lambda: layers.NormalizedFFN(D, 20, normalization_type="rmsnorm"),
    "block": lambda: layers.MegaBlock(
        D,
        24,
        shared_dim=8,
        ema_dim=4,
        ffn_dim=12,
        bidirectional=True,
        normalization_type="batchnorm",
    ),
    "scalenorm": lambda: layers.ScaleNorm(affine=False),
    "rmsnorm": lambda: layers.RMSNorm(epsilon=1e-6),
}


@pytest.mark.parametrize("name", sorted(LAYER_FACTORIES))
def test_layer_config_round_trip(name):
    layer = LAYER_FACTORIES[name]()
    x = _x(10)
    y = keras.ops.convert_to_numpy(layer(x))
    assert layer.compute_output_shape(x.shape) == x.shape
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    if not clone.built:
        clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), y)


def test_cross_attention_config_round_trip():
    layer = layers.MegaCrossAttention(
        D, shared_dim=8, relative_position_bias="simple", max_sequence_length=16
    )
    x, e = _x(11, (B, 4, D)), _x(12, (B, 6, D))
    y = keras.ops.convert_to_numpy(layer(x, e))
    clone = layers.MegaCrossAttention.from_config(layer.get_config())
    clone.build(x.shape, e.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x, e)), y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(normalization_type="groupnorm"), "normalization_type"),
        (dict(attention_activation="sigmoid"), "attention_activation"),
        (dict(relative_position_bias="alibi"), "relative_position_bias"),
        (dict(activation="swoosh"), "activation"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(chunk_size=-4), "chunk_size"),
        (dict(truncation=0), "truncation"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.MegaGatedAttention(D, 24, shared_dim=8, **kwargs)
