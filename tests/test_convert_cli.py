"""`python -m keras_mega convert`: HF checkpoint -> Keras preset."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from mega_fixtures import make_hf_model

import keras_mega
from keras_mega.__main__ import main


@pytest.mark.parametrize(
    "architecture, cls",
    [
        ("MegaModel", "MegaBackbone"),
        ("MegaForCausalLM", "MegaCausalLM"),
        ("MegaForSequenceClassification", "MegaTextClassifier"),
    ],
)
def test_convert_checks_against_hf_and_saves_a_preset(
    architecture, cls, tmp_path, capsys
):
    src, dst = tmp_path / "hf", tmp_path / "keras"
    overrides = (
        dict(is_decoder=True, bidirectional=False)
        if "Causal" in architecture
        else {}
    )
    make_hf_model(src, cls=architecture, **overrides)
    assert main(["convert", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "weight" in out  # per-weight progress
    error = float(out.split("(relative)")[0].split(":")[-1])
    assert error < 1e-5
    # The tiny checkpoints have no vocabulary: tasks come without one.
    kwargs = {} if cls == "MegaBackbone" else {"preprocessor": None}
    reloaded = getattr(keras_mega.models, cls).from_preset(str(dst), **kwargs)
    converted = getattr(keras_mega.models, cls).from_preset(str(src), **kwargs)
    ids = np.random.default_rng(0).integers(3, 48, (2, 8)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(inputs)),
        keras.ops.convert_to_numpy(converted(inputs)),
    )
    if cls == "MegaTextClassifier":  # HF's label names survive.
        assert reloaded.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    with open(dst / "metadata.json") as f:
        assert "MegaTextClassifier" in json.load(f)["tasks"]


def test_refuses_to_overwrite(tmp_path):
    src, dst = tmp_path / "hf", tmp_path / "keras"
    make_hf_model(src)
    os.makedirs(dst)
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["convert", str(src), str(dst)])
    assert (
        main(["convert", str(src), str(dst), "--overwrite", "--no-check"]) == 0
    )
    assert os.path.exists(dst / "config.json")


def test_not_a_mega_checkpoint(tmp_path):
    src = tmp_path / "hf"
    make_hf_model(src)
    config = (src / "config.json").read_text().replace('"mega"', '"bert"')
    (src / "config.json").write_text(config)
    with pytest.raises(SystemExit, match="'bert'"):
        main(["convert", str(src), str(tmp_path / "out")])


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "keras_mega", "convert", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "hf://owner/name" in result.stdout


def test_tokenizer_json_alone_gives_a_preprocessor(tmp_path, capsys):
    """A checkpoint with only `tokenizer.json` (no vocab.json/merges.txt)
    converts with its tokenizer, which tokenizes as HF's."""
    transformers = pytest.importorskip("transformers")
    import torch
    from mega_fixtures import write_tiny_bpe

    files = write_tiny_bpe(tmp_path / "bpe")
    hf_tokenizer = transformers.RobertaTokenizerFast(*files)
    src, dst = tmp_path / "hf", tmp_path / "keras"
    hf = make_hf_model(
        src, cls="MegaForSequenceClassification",
        vocab_size=hf_tokenizer.vocab_size, num_labels=2,
        id2label={0: "bad", 1: "good"},
    )  # fmt: skip
    hf_tokenizer.save_pretrained(str(src))
    os.remove(src / "vocab.json")
    os.remove(src / "merges.txt")
    assert (src / "tokenizer.json").exists()
    assert main(["convert", str(src), str(dst), "--no-check"]) == 0
    assert "without a preprocessor" not in capsys.readouterr().out
    task = keras_mega.models.MegaTextClassifier.from_preset(str(dst))
    assert task.preprocessor is not None
    assert task.id2label == {0: "bad", 1: "good"}
    task.preprocessor.sequence_length = 12
    texts = ["the quick brown fox", "a good movie"]
    encoded = hf_tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=12,
        return_tensors="np",
    )
    x = task.preprocessor(texts)
    np.testing.assert_array_equal(x["token_ids"], encoded["input_ids"])
    with torch.no_grad():
        expected = hf(
            input_ids=torch.tensor(encoded["input_ids"]).long(),
            attention_mask=torch.tensor(encoded["attention_mask"]).long(),
        ).logits.numpy()
    logits = keras.ops.convert_to_numpy(task(x))
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
    # Left out on request.
    bare = tmp_path / "bare"
    assert (
        main(["convert", str(src), str(bare), "--no-check", "--no-tokenizer"])
        == 0
    )
    assert not (bare / "preprocessor.json").exists()
    assert (bare / "task.json").exists()


def test_missing_source_says_it_does_not_exist(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")


def test_converts_a_cached_hf_handle_offline(tmp_path):
    """`hf://` through huggingface_hub's cache, with only the environment
    (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE=1) set, as a user would."""
    revision = "89abcdef0123456789abcdef0123456789abcdef"
    hub = tmp_path / "hf_home" / "hub"
    repo = hub / "models--owner--tiny-mega"
    hf = make_hf_model(
        repo / "snapshots" / revision, cls="MegaForSequenceClassification",
        num_labels=3,
    )  # fmt: skip
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    dst = tmp_path / "keras"
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_CACHE": str(hub),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "keras_mega", "convert", "hf://owner/tiny-mega",
         str(dst)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    error = float(result.stdout.split("(relative)")[0].split(":")[-1])
    assert error < 1e-5  # Checked against HF, read from the cache.
    task = keras_mega.models.MegaTextClassifier.from_preset(str(dst))
    ids = np.random.default_rng(0).integers(3, 48, (2, 8)).astype("int32")
    import torch

    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(ids).long()).logits.numpy()
    logits = keras.ops.convert_to_numpy(
        task({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    )
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
    # Not cached: one line saying how to convert a local copy.
    result = subprocess.run(
        [sys.executable, "-m", "keras_mega", "convert", "hf://owner/other",
         str(tmp_path / "other")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Cannot load 'hf://owner/other'")
    assert "python -m keras_mega convert DIR DST" in message
