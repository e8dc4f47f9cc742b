"""MegaBackbone against HF's MegaModel, weights loaded through the converter.

The matrix covers every value of every MegaConfig option the backbone has,
on padded batches, eager and compiled.
"""

import keras
import numpy as np
import pytest
from mega_fixtures import assert_close
from mega_fixtures import hf_hidden
from mega_fixtures import make_hf_model
from mega_fixtures import random_batch
from mega_fixtures import torch

from keras_mega.models import MegaBackbone

DECODER = dict(is_decoder=True, bidirectional=False)
CHUNKED = dict(use_chunking=True, chunk_size=4)

CASES = {
    "default": {},
    "decoder": DECODER,
    "decoder_bidirectional_ema": dict(is_decoder=True, bidirectional=True),
    "chunked": CHUNKED,
    "chunked_decoder": {**CHUNKED, **DECODER},
    "laplace": dict(attention_activation="laplace"),
    "laplace_decoder_chunked": dict(
        attention_activation="laplace", **CHUNKED, **DECODER
    ),
    "relu2": dict(attention_activation="relu2"),
    "relu2_decoder": dict(attention_activation="relu2", **DECODER),
    "relu2_chunked": dict(attention_activation="relu2", **CHUNKED),
    "simple_bias": dict(relative_positional_bias="simple"),
    "simple_bias_chunked_decoder": dict(
        relative_positional_bias="simple", **CHUNKED, **DECODER
    ),
    "layernorm_postnorm": dict(
        normalization_type="layernorm",
        normalize_before_mega=False,
        normalize_before_ffn=False,
    ),
    "scalenorm_no_affine": dict(norm_affine=False),
    "rmsnorm_hf": dict(normalization_type="rmsnorm"),
    "rmsnorm_no_affine": dict(normalization_type="rmsnorm", norm_affine=False),
    "batchnorm": dict(normalization_type="batchnorm"),
    "batchnorm_no_affine_postnorm": dict(
        normalization_type="batchnorm",
        norm_affine=False,
        normalize_before_mega=False,
    ),
    "syncbatchnorm": dict(normalization_type="syncbatchnorm"),
    "mixed_prenorm": dict(
        normalize_before_mega=False, normalize_before_ffn=True
    ),
    "truncation": dict(truncation=3),
    "truncation_decoder": dict(truncation=5, **DECODER),
    "no_ffn_gelu": dict(use_normalized_ffn=False, activation="gelu"),
    "relu": dict(activation="relu"),
    "tanh_linear_shapes": dict(
        activation="tanh", nffn_hidden_size=8, intermediate_size=12
    ),
    "token_types": dict(add_token_type_embeddings=True, type_vocab_size=3),
    "ema_dim_1": dict(ema_projection_size=1),
    "feature_dropout_eval": dict(use_feature_dropout=True, dropout_prob=0.3),
}


def _inputs(backbone, ids, mask, seed=0):
    inputs = {"token_ids": ids, "padding_mask": mask}
    if backbone.num_segments:
        rng = np.random.default_rng(seed)
        inputs["segment_ids"] = rng.integers(
            0, backbone.num_segments, ids.shape
        ).astype("int32")
    return inputs


@pytest.mark.parametrize("name", sorted(CASES))
def test_backbone_matches_hf(name, tmp_path):
    overrides = CASES[name]
    hf = make_hf_model(tmp_path, **overrides)
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(3, 8, lengths=[8, 5, 6])
    inputs = _inputs(backbone, ids, mask)
    kwargs = {}
    if "segment_ids" in inputs:
        kwargs["token_type_ids"] = torch.tensor(inputs["segment_ids"]).long()
    expected = hf_hidden(hf, ids, mask, **kwargs).last_hidden_state.numpy()

    eager = keras.ops.convert_to_numpy(backbone(inputs, training=False))
    assert_close(eager, expected)
    jit = keras.backend.backend() != "torch"
    backbone.compile(jit_compile=jit)
    compiled = backbone.predict(inputs, verbose=0)
    assert_close(compiled, expected)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(attention_activation="laplace", relative_positional_bias="simple"),
    ],
    ids=["softmax_rotary", "laplace_simple"],
)
def test_cross_attention_decoder_matches_hf(overrides, tmp_path):
    hf = make_hf_model(
        tmp_path, add_cross_attention=True, **DECODER, **overrides
    )
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 6, lengths=[6, 4])
    rng = np.random.default_rng(1)
    encoder = rng.normal(size=(2, 7, 16)).astype("float32")
    encoder_mask = np.ones((2, 7), "int32")
    encoder_mask[1, 5:] = 0
    expected = hf_hidden(
        hf,
        ids,
        mask,
        encoder_hidden_states=torch.tensor(encoder),
        encoder_attention_mask=torch.tensor(encoder_mask).long(),
    ).last_hidden_state.numpy()
    actual = backbone.predict(
        {
            "token_ids": ids,
            "padding_mask": mask,
            "encoder_sequence_output": encoder,
            "encoder_padding_mask": encoder_mask,
        },
        verbose=0,
    )
    assert_close(actual, expected)


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("activation", ["softmax", "laplace"])
def test_chunk_auto_padding_equals_hf_on_padded_input(
    causal, activation, tmp_path
):
    """HF needs a chunk multiple; we pad by ourselves and strip again."""
    overrides = dict(CHUNKED, attention_activation=activation)
    if causal:
        overrides.update(DECODER)
    hf = make_hf_model(tmp_path, **overrides)
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 10, lengths=[10, 7])
    padded_ids = np.concatenate([ids, np.ones((2, 2), "int32")], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((2, 2), "int32")], axis=1)
    expected = hf_hidden(hf, padded_ids, padded_mask).last_hidden_state
    expected = expected.numpy()[:, :10]
    actual = backbone.predict(
        {"token_ids": ids, "padding_mask": mask}, verbose=0
    )
    assert actual.shape == (2, 10, 16)
    # Padding positions of a chunk that is all padding attend to padding,
    # which HF's padded input fills differently: compare the real tokens.
    assert_close(actual, expected, mask=mask)


def test_length_shorter_than_chunk(tmp_path):
    hf = make_hf_model(tmp_path, use_chunking=True, chunk_size=16)
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 6, lengths=[6, 3])
    expected = hf_hidden(hf, ids, mask).last_hidden_state.numpy()
    actual = backbone.predict(
        {"token_ids": ids, "padding_mask": mask}, verbose=0
    )
    assert_close(actual, expected)


def test_any_head_checkpoint_loads_into_backbone(tmp_path):
    hf = make_hf_model(tmp_path, cls="MegaForMaskedLM")
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 8, lengths=[8, 6])
    expected = hf_hidden(hf.mega, ids, mask).last_hidden_state.numpy()
    actual = backbone.predict(
        {"token_ids": ids, "padding_mask": mask}, verbose=0
    )
    assert_close(actual, expected)


def test_pytorch_bin_checkpoint(tmp_path):
    hf = make_hf_model(None)
    hf.save_pretrained(str(tmp_path), safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists()
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 8, lengths=[8, 6])
    expected = hf_hidden(hf, ids, mask).last_hidden_state.numpy()
    actual = backbone.predict(
        {"token_ids": ids, "padding_mask": mask}, verbose=0
    )
    assert_close(actual, expected)


def test_keras_hub_entry_point_reads_hf_mega(tmp_path):
    import keras_hub

    make_hf_model(tmp_path)
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert isinstance(backbone, MegaBackbone)
    assert backbone.num_layers == 2


def test_hf_rmsnorm_loads_as_hf_rmsnorm_and_real_rmsnorm_on_request(tmp_path):
    make_hf_model(tmp_path, normalization_type="rmsnorm")
    with pytest.warns(UserWarning, match="never normalizes"):
        backbone = MegaBackbone.from_preset(str(tmp_path))
    assert backbone.normalization_type == "hf_rmsnorm"
    real = MegaBackbone.from_preset(str(tmp_path), normalization_type="rmsnorm")
    ids, mask = random_batch(2, 8)
    inputs = {"token_ids": ids, "padding_mask": mask}
    a = backbone.predict(inputs, verbose=0)
    b = real.predict(inputs, verbose=0)
    assert np.abs(a - b).max() > 1e-3  # a real RMSNorm normalizes


@pytest.mark.parametrize(
    "overrides",
    [
        dict(relative_positional_bias="rotary"),
        dict(
            relative_positional_bias="simple",
            bidirectional=True,
            chunk_size=16,
            use_chunking=True,
        ),
    ],
    ids=["rotary", "simple_bidirectional"],
)
def test_fresh_initialization_draws_like_hf(overrides):
    """A fresh backbone's weights follow HF's `_init_weights`: each weight
    has HF's mean and spread, and no two weights share their draws (one
    Keras initializer instance reused gives identical values)."""
    import transformers

    from keras_mega.convert.hf import backbone_weight_map
    from keras_mega.convert.hf import convert_backbone_config

    torch.manual_seed(0)
    config = transformers.MegaConfig(
        vocab_size=64,
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        ema_projection_size=16,
        shared_representation_size=32,
        nffn_hidden_size=128,
        max_positions=64,
        **overrides,
    )
    hf_weights = {
        name: tensor.detach().numpy()
        for name, tensor in transformers.MegaModel(config).named_parameters()
    }
    keras.utils.set_random_seed(0)
    backbone = MegaBackbone(**convert_backbone_config(config.to_dict()))
    keras_weights = {}
    for hf_key, (variable, transform) in backbone_weight_map(backbone).items():
        ours = np.asarray(keras.ops.convert_to_numpy(variable), np.float64)
        theirs = hf_weights[hf_key].astype(np.float64)
        theirs = transform(theirs) if transform else theirs
        assert ours.shape == theirs.shape, hf_key
        n = ours.size
        if theirs.std() == 0:  # constant init (zeros, ones)
            np.testing.assert_array_equal(ours, theirs, err_msg=hf_key)
            continue
        assert abs(np.log(ours.std() / theirs.std())) < 4 / np.sqrt(n), hf_key
        spread = np.sqrt(ours.var() + theirs.var())
        assert abs(ours.mean() - theirs.mean()) < 5 * spread / np.sqrt(n), (
            hf_key
        )
        keras_weights[hf_key] = ours
    names = sorted(keras_weights)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            same = keras_weights[a].shape == keras_weights[
                b
            ].shape and np.array_equal(keras_weights[a], keras_weights[b])
            assert not same, f"{a} and {b} start with the same values"
