"""Named Mega presets and the network check of remote handles."""

import os
import socket

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

REMOTE_HOSTS = {
    "hf://": "huggingface.co",
    "kaggle://": "www.kaggle.com",
    "modelscope://": "www.modelscope.cn",
}


def resolve_handle(preset):
    """The handle a named preset stands for (else `preset` unchanged)."""
    if preset in backbone_presets:
        return backbone_presets[preset]["kaggle_handle"]
    return preset


def check_reachable(preset, cls_name="MegaBackbone", timeout=3.0):
    """Fails fast, in one line, when a remote preset cannot be downloaded.

    Local directories are never touched by the network: only `hf://`,
    `kaggle://` and `modelscope://` handles (and the named presets that
    stand for them) are checked.
    """
    handle = resolve_handle(str(preset))
    scheme = next((s for s in REMOTE_HOSTS if handle.startswith(s)), None)
    if scheme is None:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    if not offline:
        try:
            with socket.create_connection((REMOTE_HOSTS[scheme], 443), timeout):
                return
        except OSError:
            pass
    raise ConnectionError(
        f"Cannot load {preset!r} ({handle}): {REMOTE_HOSTS[scheme]} is not "
        "reachable (no network). Download it where there is a network and "
        f"load the local copy instead: {cls_name}.from_preset('/path/to/dir')."
    )
