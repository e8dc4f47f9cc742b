"""Training parity with HF: the same weights, batch and optimizer give the
same losses and the same weights after several steps, so keras-mega's
gradients are HF's (forward parity alone would not show it)."""

import keras
import numpy as np
import pytest
from mega_fixtures import make_hf_model
from mega_fixtures import random_batch
from mega_fixtures import torch

from keras_mega.convert.hf import backbone_weight_map
from keras_mega.models import MegaBackbone

STEPS = 4
LEARNING_RATE = 0.01

CASES = {
    "bidirectional_rotary": {},
    "chunked_decoder_layernorm": dict(
        use_chunking=True,
        chunk_size=4,
        is_decoder=True,
        bidirectional=False,
        normalization_type="layernorm",
    ),
    "simple_bias_laplace_postnorm": dict(
        relative_positional_bias="simple",
        attention_activation="laplace",
        normalize_before_mega=False,
    ),
}


def _hf_losses(hf, ids, mask, projection, targets):
    hf.train()
    optimizer = torch.optim.SGD(hf.parameters(), lr=LEARNING_RATE)
    w = torch.tensor(projection)
    y = torch.tensor(targets)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        hidden = hf(
            input_ids=torch.tensor(ids).long(),
            attention_mask=torch.tensor(mask).long(),
        ).last_hidden_state
        loss = ((hidden @ w - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", sorted(CASES))
def test_sgd_steps_match_hf(name, tmp_path):
    hf = make_hf_model(tmp_path, **CASES[name])
    backbone = MegaBackbone.from_preset(str(tmp_path))
    ids, mask = random_batch(2, 8)  # no padding: the loss averages every token
    rng = np.random.default_rng(1)
    projection = 0.25 * rng.normal(size=(backbone.hidden_dim, 1)).astype(
        "float32"
    )
    targets = rng.normal(size=(2, 8, 1)).astype("float32")

    inputs = {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(
            (None,), dtype="int32", name="padding_mask"
        ),
    }
    head = keras.layers.Dense(1, use_bias=False, trainable=False)
    model = keras.Model(inputs, head(backbone(inputs)))
    head.kernel.assign(projection)
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss="mse",
        jit_compile=keras.backend.backend() != "torch",
    )
    losses = [
        float(
            model.train_on_batch(
                {"token_ids": ids, "padding_mask": mask}, targets
            )
        )
        for _ in range(STEPS)
    ]
    expected = _hf_losses(hf, ids, mask, projection, targets)
    # The loss must move, or the comparison says nothing about gradients.
    assert abs(expected[-1] - expected[0]) > 1e-2 * expected[0]
    np.testing.assert_allclose(losses, expected, rtol=1e-4)

    hf_state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    for key, (variable, transform) in backbone_weight_map(backbone).items():
        theirs = transform(hf_state[key]) if transform else hf_state[key]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable),
            theirs,
            atol=2e-5,
            rtol=1e-4,
            err_msg=key,
        )
