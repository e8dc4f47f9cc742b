"""Tiny Hugging Face Mega checkpoints for tests: the reference implementation.

Every test that compares against HF builds its checkpoint here, locally,
with weights moved away from their init so that a swapped or misplaced
parameter cannot hide behind a symmetric initialization.
"""

import keras
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

TINY = dict(
    vocab_size=48,
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=24,
    ema_projection_size=4,
    shared_representation_size=8,
    nffn_hidden_size=20,
    max_positions=64,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
)


def hf_config(**overrides):
    return transformers.MegaConfig(**{**TINY, **overrides})


def perturb(model, seed=0, scale=0.2):
    """Moves every parameter (and batch-norm statistic) away from its init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or "_float_tensor" in name:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(
                    0.5 + torch.rand(tensor.shape, generator=generator)
                )
            else:
                tensor.add_(scale * noise)
    return model


def make_hf_model(path=None, cls="MegaModel", seed=0, **overrides):
    """Builds, perturbs and (with `path`) saves a tiny HF Mega model."""
    torch.manual_seed(seed)
    config = hf_config(**overrides)
    model = getattr(transformers, cls)(config)
    perturb(model, seed).eval()
    if path is not None:
        model.save_pretrained(str(path))
    return model


def random_batch(batch_size, length, vocab_size=48, lengths=None, seed=0):
    """Token ids (avoiding the pad id 1) and a right-padding mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab_size, size=(batch_size, length)).astype("int32")
    mask = np.ones((batch_size, length), "int32")
    for row, n in enumerate(lengths or []):
        mask[row, n:] = 0
        ids[row, n:] = 1
    return ids, mask


def hf_hidden(model, ids, mask, **kwargs):
    """HF's full forward (no cache: HF's cache refuses bidirectional EMAs)."""
    kwargs.setdefault("use_cache", False)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            **kwargs,
        )
    return out


def assert_close(actual, expected, rtol=1e-5, mask=None):
    """Max error relative to the output scale, optionally at kept rows."""
    actual = np.asarray(keras.ops.convert_to_numpy(actual), dtype="float64")
    expected = np.asarray(keras.ops.convert_to_numpy(expected), dtype="float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if mask is not None:
        keep = np.asarray(mask).astype(bool)
        actual, expected = actual[keep], expected[keep]
    scale = max(np.abs(expected).max(), 1.0)
    error = np.abs(actual - expected).max() / scale
    assert error <= rtol, f"max relative error {error:.3g} > {rtol}"
    return error
