"""Named Mega presets, and where a preset handle is loaded from."""

import os

# The published HF checkpoint `mnaylor/mega-base-wikitext`: MegaForMaskedLM
# pretrained on wikitext-103 with RoBERTa's BPE vocabulary.
backbone_presets = {
    "mega_base_wikitext": {
        "metadata": {
            "description": (
                "4-layer Mega masked language model (hidden 128, "
                "intermediate 256, shared representation 64, EMA 16, "
                "ScaleNorm pre-norm, rotary relative bias, max positions "
                "10000, RoBERTa BPE vocabulary of 50265) trained on "
                "wikitext-103; converted on load from Hugging Face "
                "`mnaylor/mega-base-wikitext`."
            ),
            "params": 7_326_088,
            "path": "mega",
        },
        "kaggle_handle": "hf://mnaylor/mega-base-wikitext",
    },
}

# The checkpoint's config fields as its model page documents them (HF
# `MegaConfig` names). Its defaults describe this model too, except the
# vocabulary (RoBERTa's BPE, not BERT's 30522) and `max_positions`.
MEGA_BASE_WIKITEXT_HF_CONFIG = {
    "vocab_size": 50265,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "intermediate_size": 256,
    "ema_projection_size": 16,
    "shared_representation_size": 64,
    "normalization_type": "scalenorm",
    "normalize_before_mega": True,
    "relative_positional_bias": "rotary",
    "max_positions": 10000,
}

HF_SCHEME = "hf://"
# The files of an `hf://` repository that a preset or an HF Mega checkpoint
# can use: configs, tokenizer files, safetensors and Keras weights. Other
# files (other frameworks' weights, ONNX, ...) are not downloaded.
HF_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.weights.h5", "assets/*"]
# Torch weights, downloaded only for repositories without safetensors.
HF_TORCH_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
WEIGHT_SUFFIXES = (".safetensors", ".weights.h5", ".bin")


def resolve_handle(preset):
    """The handle a named preset stands for (else `preset` unchanged)."""
    if preset in backbone_presets:
        return backbone_presets[preset]["kaggle_handle"]
    return preset


def resolve_preset(preset, cls_name="MegaBackbone", usage=None):
    """Where to load `preset` from: a local directory when possible.

    - a named preset stands for its handle;
    - an `hf://owner/name` handle becomes the local snapshot directory of
      huggingface_hub's cache (downloaded when online; offline, or with
      `HF_HUB_OFFLINE=1`, a cached copy loads and an uncached one is a
      one-line `ConnectionError` saying how to load a local copy);
    - a local path that does not exist is a `FileNotFoundError`;
    - other remote handles (`kaggle://`, `gs://`, ...) go to keras-hub as
      they are.

    Args:
        preset: what the user passed to `from_preset` (or the converter).
        cls_name: the class loading it, for messages.
        usage: how to load a local copy `DIR`, for messages; defaults to
            `{cls_name}.from_preset('DIR')`.
    """
    if not isinstance(preset, (str, os.PathLike)):
        return preset  # keras-hub names the type.
    preset = os.fspath(preset)
    handle = resolve_handle(preset)
    usage = usage or f"{cls_name}.from_preset('DIR')"
    if handle.startswith(HF_SCHEME):
        return download_hf(preset, handle, usage)
    if "://" in handle:
        return handle
    if not os.path.exists(handle):
        names = ", ".join(repr(name) for name in backbone_presets)
        raise FileNotFoundError(
            f"Preset {preset!r} does not exist: it is not a directory "
            f"(looked in {os.path.abspath(handle)}) nor a named preset "
            f"({names}). Pass a Keras preset directory, an HF Mega "
            "checkpoint directory or an 'hf://owner/name' handle."
        )
    if not os.path.isdir(handle):
        raise FileNotFoundError(
            f"Preset {preset!r} is a file, not a directory: pass the "
            "directory that holds config.json."
        )
    return handle


def _hf_errors():
    try:
        from huggingface_hub import errors
    except ImportError:  # huggingface_hub < 0.22
        from huggingface_hub import utils as errors
    return errors


def _has_weights(folder):
    for _, _, files in os.walk(folder):
        if any(name.endswith(WEIGHT_SUFFIXES) for name in files):
            return True
    return False


def _hub_answers(huggingface_hub, errors, repo_id, constants):
    """Whether the Hub answers about `repo_id` within huggingface_hub's
    `HF_HUB_ETAG_TIMEOUT` (10 s by default).

    `snapshot_download` asks without a timeout, which can hang for minutes
    where connections are dropped rather than refused; without an answer,
    the cache is used as huggingface_hub does offline. A missing, private
    or gated repository, or a malformed name, raises as usual.
    """
    try:
        huggingface_hub.HfApi().repo_info(
            repo_id, timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    except (
        errors.HFValidationError,
        errors.RepositoryNotFoundError,
        errors.RevisionNotFoundError,
    ):
        raise
    except Exception:  # noqa: BLE001  (no connection, a timeout, the Hub down)
        return False
    return True


def download_hf(preset, handle, usage):
    """The local snapshot directory of `hf://` `handle`, from
    huggingface_hub's cache (and the Hub, unless offline)."""
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise ImportError(
            f"Loading {preset!r} needs `huggingface_hub`: pip install "
            "huggingface_hub (or load a local copy)."
        ) from None
    errors = _hf_errors()
    repo_id = handle[len(HF_SCHEME) :].strip("/")
    try:
        local_only = constants.HF_HUB_OFFLINE or not _hub_answers(
            huggingface_hub, errors, repo_id, constants
        )
        folder = huggingface_hub.snapshot_download(
            repo_id, allow_patterns=HF_PATTERNS, local_files_only=local_only
        )
        if not _has_weights(folder):
            folder = huggingface_hub.snapshot_download(
                repo_id,
                allow_patterns=HF_TORCH_PATTERNS,
                local_files_only=local_only,
            )
    except errors.HFValidationError:
        raise ValueError(
            f"{preset!r}: Hugging Face handles have the form "
            "'hf://owner/name', e.g. 'hf://mnaylor/mega-base-wikitext'."
        ) from None
    except errors.LocalEntryNotFoundError:
        why = (
            "HF_HUB_OFFLINE is set"
            if constants.HF_HUB_OFFLINE
            else "no network"
        )
        raise ConnectionError(
            f"Cannot load {preset!r}: {handle} is not in the Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}) and huggingface.co is not "
            f"reachable ({why}). Download it where "
            "there is a network (huggingface_hub.snapshot_download("
            f"'{repo_id}', local_dir='DIR'), or copy a cache that has it and "
            "set HF_HUB_CACHE) and load the local copy: "
            f"{usage}."
        ) from None
    except errors.RepositoryNotFoundError:
        raise FileNotFoundError(
            f"Cannot load {preset!r}: there is no Hugging Face model "
            f"{repo_id!r}, or it is private or gated (log in with `hf auth "
            "login`, or huggingface_hub.login(), and accept its terms)."
        ) from None
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise FileNotFoundError(
            f"Cannot load {preset!r}: {handle} has no config.json (local "
            f"copy: {folder}). It is not a Keras preset nor an HF "
            "checkpoint, or its cached copy is incomplete."
        )
    return folder
