"""Shared test fixtures: the HF reference, tiny tokenizers, subprocesses.

- HF reference: tiny Hugging Face Mega checkpoints, built locally, with
  weights moved away from their init so that a swapped or misplaced
  parameter cannot hide behind a symmetric initialization; HF's forward and
  a relative-error assertion.
- Tokenizers: a tiny byte-level BPE trained on the spot (RoBERTa's special
  tokens at ids 0-4) and a `MegaTokenizer` over it.
- `run_reporting`: Python code in a fresh interpreter (another backend,
  other device flags) that reports JSON on a `RESULT <json>` line.
- `NO_DROPOUT` and `preprocessed` for task tests.

The one module tests import helpers from; no test imports another test.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_mega.models import MegaMaskedLM
from keras_mega.models import MegaTokenizer

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

NO_DROPOUT = dict(
    dropout=0.0, hidden_dropout=0.0, attention_dropout=0.0,
    ffn_activation_dropout=0.0,
)  # fmt: skip


def tiny_config(**overrides):
    """A tiny `MegaBackbone` config: 2 layers, width 16, no dropout."""
    config = dict(
        vocabulary_size=48, num_layers=2, hidden_dim=16, intermediate_dim=24,
        shared_dim=8, ema_dim=4, ffn_dim=20, **NO_DROPOUT,
    )  # fmt: skip
    return {**config, **overrides}


CAUSAL = dict(causal=True, bidirectional=False)

# HF reference
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


# Tokenizers

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
CORPUS = [
    "The quick brown fox jumped over the lazy dog.",
    "Hello world! It's 2024, isn't it? I'll see; we've won.",
    "naïve café — déjà vu, 東京 and 😀 emoji",
    "tabs\tand\nnewlines\n\n  double  spaces   and\r\nwindows",
    "good movie great film bad movie awful film",
    "john lives in paris and mary lives in rome",
]


def write_tiny_bpe(directory, vocab_size=330):
    """Trains a tiny byte-level BPE; writes vocab.json and merges.txt.

    The special tokens take ids 0-4 in RoBERTa's order.
    """
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 3,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL,
        show_progress=False,
    )
    os.makedirs(directory, exist_ok=True)
    bpe.save_model(str(directory))
    vocab = os.path.join(directory, "vocab.json")
    with open(vocab, encoding="utf-8") as f:
        ids = json.load(f)
    assert [ids[t] for t in SPECIAL] == [0, 1, 2, 3, 4]
    return vocab, os.path.join(directory, "merges.txt")


def tiny_tokenizer(directory):
    vocab, merges = write_tiny_bpe(directory)
    return MegaTokenizer(vocabulary=vocab, merges=merges)


# Tasks


def preprocessed(model, x):
    """The model's inputs for raw `x`, deterministic for the masked LM."""
    if isinstance(model, MegaMaskedLM):
        out = model.preprocessor.tokenizer(list(x))
        ids = np.full((len(x), 8), 1, "int32")
        for i, row in enumerate(out):
            ids[i, : len(row)] = row[:8]
        return {
            "token_ids": ids,
            "padding_mask": (ids != 1).astype("int32"),
            "mask_positions": np.array([[1, 2]] * len(x), "int32"),
        }
    return keras.utils.unpack_x_y_sample_weight(model.preprocessor(x=x))[0]


# Subprocesses


PREFIX = "RESULT "


def run_reporting(code, *args, **env):
    """Runs `code` with `args` as `sys.argv[1:]` and `env` added to the
    environment; fails with the process's stderr if it reports nothing."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(PREFIX)]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len(PREFIX) :])
