"""Command line: `python -m keras_mega convert SRC DST` (or `keras-mega`).

Converts a Hugging Face Mega checkpoint (a local directory or an `hf://`
handle, read through huggingface_hub's cache, so a cached one converts
offline) into a Keras preset directory holding the task that matches its HF
architecture, with its tokenizer and preprocessor when the checkpoint has
tokenizer files (`vocab.json` and `merges.txt`, or `tokenizer.json`). With
`transformers<5` installed, the converted model is checked against HF on a
sample input.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# HF architecture -> keras-mega class name.


def _resolve(src):
    """`src` as a local directory (`hf://` handles: huggingface_hub's cache)."""
    from keras_mega.models.mega_presets import resolve_preset

    return resolve_preset(src, usage="python -m keras_mega convert DIR DST")


def _read_config(src):
    from keras_mega import keras_hub_compat as compat

    if not compat.check_file_exists(src, "config.json"):
        raise SystemExit(f"error: {src} has no config.json")
    with open(compat.get_file(src, "config.json")) as f:
        return json.load(f)


def _sample_inputs(config, batch=2, length=None):
    import numpy as np

    if length is None:
        chunk = (
            config.get("chunk_size", -1) if config.get("use_chunking") else 0
        )
        length = 2 * chunk if chunk and chunk > 0 else 16
    rng = np.random.default_rng(0)
    ids = rng.integers(3, config["vocab_size"], (batch, length)).astype("int32")
    mask = np.ones_like(ids)
    return ids, mask


def _hf_outputs(architecture, src, ids, mask):
    """HF's outputs on the sample, as a dict of numpy arrays."""
    import torch
    import transformers

    model = getattr(transformers, architecture).from_pretrained(src).eval()
    kwargs = dict(
        input_ids=torch.tensor(ids).long(),
        attention_mask=torch.tensor(mask).long(),
    )
    if architecture == "MegaForMultipleChoice":
        kwargs = {k: v[:, None].repeat(1, 2, 1) for k, v in kwargs.items()}
    if architecture == "MegaModel" or architecture.endswith("CausalLM"):
        kwargs["use_cache"] = False
    with torch.no_grad():
        out = model(**kwargs)
    if architecture == "MegaModel":
        return {"sequence_output": out.last_hidden_state.numpy()}
    if architecture == "MegaForQuestionAnswering":
        return {
            "start_logits": out.start_logits.numpy(),
            "end_logits": out.end_logits.numpy(),
        }
    return {"logits": out.logits.numpy()}


def _keras_outputs(architecture, model, ids, mask):
    import keras
    import numpy as np

    inputs = {"token_ids": ids, "padding_mask": mask}
    if getattr(_backbone(model), "num_segments", 0):
        inputs["segment_ids"] = np.zeros_like(ids)
    if architecture == "MegaForMaskedLM":
        positions = np.arange(ids.shape[1], dtype="int32")
        inputs["mask_positions"] = np.broadcast_to(positions, ids.shape).copy()
    if architecture == "MegaForMultipleChoice":
        inputs = {
            k: np.repeat(v[:, None], 2, axis=1) for k, v in inputs.items()
        }
    out = model(inputs, training=False)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    key = "sequence_output" if architecture == "MegaModel" else "logits"
    return {key: keras.ops.convert_to_numpy(out)}


def _backbone(model):
    return getattr(model, "backbone", model)


def verify(architecture, src, model):
    """Max difference to HF relative to the output scale, or None."""
    import numpy as np

    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers<5 is not installed: skipping the check against HF")
        return None
    config = _read_config(src)
    ids, mask = _sample_inputs(config)
    theirs = _hf_outputs(architecture, src, ids, mask)
    ours = _keras_outputs(architecture, model, ids, mask)
    worst = 0.0
    for key, expected in theirs.items():
        actual = ours[key]
        scale = max(float(np.abs(expected).max()), 1.0)
        error = float(np.abs(actual - expected).max()) / scale
        print(f"max |keras-mega - HF| on {key}: {error:.2e} (relative)")
        worst = max(worst, error)
    return worst


def convert(
    src, dst, overwrite=False, check=True, tolerance=1e-4, tokenizer=True
):
    import keras_mega
    from keras_mega.convert import hf
    from keras_mega.convert import hf_checkpoint
    from keras_mega.convert import hf_heads

    if os.path.exists(dst) and not overwrite:
        raise SystemExit(f"error: {dst} exists; pass --overwrite to replace it")
    local = _resolve(src)
    if local != src:
        print(f"reading {src} from {local}")
    src = local
    config = _read_config(src)
    hf.check_mega_config(config, where=f"{src}/config.json")
    architecture = (config.get("architectures") or ["MegaModel"])[0]
    if architecture not in hf_heads.ARCHITECTURES:
        raise SystemExit(
            f"error: unknown HF Mega architecture {architecture!r}; "
            f"expected one of {', '.join(hf_heads.ARCHITECTURES)}"
        )
    cls = getattr(keras_mega.models, hf_heads.ARCHITECTURES[architecture])
    has_tokenizer = tokenizer and hf.has_tokenizer(src)
    kwargs = {}
    if cls is not keras_mega.models.MegaBackbone and not has_tokenizer:
        if tokenizer:
            print(
                "no tokenizer files (vocab.json + merges.txt, or "
                "tokenizer.json): converting without a preprocessor"
            )
        kwargs["preprocessor"] = None
    print(f"converting {architecture} from {src} into {cls.__name__}")
    with hf_checkpoint.show_progress():
        model = cls.from_preset(src, **kwargs)
    error = verify(architecture, src, model) if check else None
    if error is not None and error > tolerance:
        raise SystemExit(
            f"error: converted model differs from HF by {error:.2e} "
            f"(> {tolerance}); not saving"
        )
    model.save_to_preset(dst)
    if has_tokenizer and cls is keras_mega.models.MegaBackbone:
        tokenizer = keras_mega.models.MegaTokenizer.from_preset(src)
        tokenizer.save_to_preset(dst)
    print(f"saved {cls.__name__} preset to {dst}")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keras-mega", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("convert", help="convert an HF Mega checkpoint")
    c.add_argument("src", help="HF Mega directory or hf://owner/name")
    c.add_argument("dst", help="Keras preset directory to write")
    c.add_argument("--overwrite", action="store_true", help="replace dst")
    c.add_argument(
        "--no-check", action="store_true", help="skip the check against HF"
    )
    c.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest relative difference to HF accepted (default 1e-4)",
    )
    c.add_argument(
        "--no-tokenizer",
        action="store_true",
        help="convert without the tokenizer and preprocessor",
    )
    args = parser.parse_args(argv)
    try:
        convert(
            args.src, args.dst, args.overwrite, not args.no_check,
            args.tolerance, tokenizer=not args.no_tokenizer,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
