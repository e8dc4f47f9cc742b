"""`python -m keras_mega convert`: HF checkpoint -> Keras preset."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from hf_reference import make_hf_model
from keras_mega.__main__ import main

import keras_mega


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
    overrides = dict(is_decoder=True, bidirectional=False) if "Causal" in architecture else {}
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


def test_refuses_to_overwrite(tmp_path):
    src, dst = tmp_path / "hf", tmp_path / "keras"
    make_hf_model(src)
    os.makedirs(dst)
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["convert", str(src), str(dst)])
    assert main(["convert", str(src), str(dst), "--overwrite", "--no-check"]) == 0
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
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0
    assert "hf://owner/name" in result.stdout
