"""Per-layer outputs, attention maps and embeddings input against HF."""

import numpy as np
import pytest
from mega_fixtures import assert_close
from mega_fixtures import hf_hidden
from mega_fixtures import make_hf_model
from mega_fixtures import random_batch
from mega_fixtures import torch

from keras_mega.models import MegaBackbone

CASES = {
    "chunked_encoder": dict(use_chunking=True, chunk_size=4),
    "decoder_cross": dict(
        is_decoder=True, bidirectional=False, add_cross_attention=True
    ),
    "laplace_token_types": dict(
        attention_activation="laplace", add_token_type_embeddings=True
    ),
}


def _inputs(backbone, ids, mask):
    inputs = {"token_ids": ids, "padding_mask": mask}
    kwargs = {}
    if backbone.num_segments:
        inputs["segment_ids"] = (
            (np.arange(ids.shape[1]) > 3)
            .astype("int32")[None]
            .repeat(len(ids), 0)
        )
        kwargs["token_type_ids"] = torch.tensor(inputs["segment_ids"]).long()
    if backbone.cross_attention:
        encoder = np.random.default_rng(3).normal(size=(len(ids), 5, 16))
        inputs["encoder_sequence_output"] = encoder.astype("float32")
        inputs["encoder_padding_mask"] = np.ones((len(ids), 5), "int32")
        kwargs["encoder_hidden_states"] = torch.tensor(encoder).float()
        kwargs["encoder_attention_mask"] = torch.ones(len(ids), 5).long()
    return inputs, kwargs


@pytest.mark.parametrize("name", sorted(CASES))
def test_hidden_states_and_attentions_match_hf(name, tmp_path):
    hf = make_hf_model(tmp_path, **CASES[name])
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 8, lengths=[8, 6])
    inputs, kwargs = _inputs(backbone, ids, mask)
    expected = hf_hidden(
        hf,
        ids,
        mask,
        output_hidden_states=True,
        output_attentions=True,
        **kwargs,
    )
    features = backbone.feature_extractor(output_attentions=True)
    out = features(inputs)
    assert len(out["hidden_states"]) == backbone.num_layers + 1
    for ours, theirs in zip(out["hidden_states"], expected.hidden_states):
        assert_close(ours, theirs.numpy())
    for ours, theirs in zip(out["attentions"], expected.attentions):
        assert_close(ours, theirs.numpy())
    if backbone.cross_attention:
        for ours, theirs in zip(
            out["cross_attentions"], expected.cross_attentions
        ):
            assert_close(ours, theirs.numpy())
    assert_close(out["sequence_output"], backbone(inputs))


def test_inputs_embeds_match_hf(tmp_path):
    hf = make_hf_model(tmp_path, add_token_type_embeddings=True)
    backbone = MegaBackbone.from_preset(str(tmp_path))
    rng = np.random.default_rng(0)
    embeds = rng.normal(size=(2, 8, 16)).astype("float32")
    mask = np.ones((2, 8), "int32")
    mask[1, 6:] = 0
    segments = np.zeros((2, 8), "int32")
    with torch.no_grad():
        expected = hf(
            inputs_embeds=torch.tensor(embeds),
            attention_mask=torch.tensor(mask).long(),
            token_type_ids=torch.tensor(segments).long(),
        ).last_hidden_state.numpy()
    model = backbone.feature_extractor(
        output_hidden_states=False, inputs_embeds=True
    )
    out = model(
        {"inputs_embeds": embeds, "padding_mask": mask, "segment_ids": segments}
    )
    assert_close(out["sequence_output"], expected)


def test_feature_extractor_shares_weights():
    backbone = MegaBackbone(
        vocabulary_size=20,
        num_layers=1,
        hidden_dim=8,
        intermediate_dim=8,
        shared_dim=4,
        ema_dim=2,
    )
    features = backbone.feature_extractor()
    assert {id(w) for w in features.weights} == {
        id(w) for w in backbone.weights
    }
