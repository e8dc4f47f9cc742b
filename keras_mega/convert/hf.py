"""The Hugging Face Mega converter, in the shape of keras-hub's.

Like keras-hub's converters (`keras_hub/src/utils/transformers/
convert_*.py`): `backbone_cls`, `convert_backbone_config`,
`convert_weights`, `convert_head` and `convert_tokenizer`, and the
`load_backbone` / `load_task` keras-mega's preset loader
(`keras_mega.preset_loaders`) calls for HF directories with
`model_type: "mega"`. The heads (`load_task`, `convert_head`, the `HEADS`
table) are in `hf_heads`. Unlike keras-hub's, checkpoints are read without
`transformers` and every weight is assigned strictly (`hf_checkpoint`): a
weight missing from the checkpoint, one the config does not use, or one of
another shape is an error naming it.
"""

import json
import warnings

from keras_mega import keras_hub_compat as compat
from keras_mega.convert.hf_checkpoint import checkpoint_prefix
from keras_mega.convert.hf_checkpoint import dense_weights
from keras_mega.convert.hf_checkpoint import load_weights
from keras_mega.convert.hf_checkpoint import read_checkpoint
from keras_mega.convert.hf_heads import convert_head
from keras_mega.convert.hf_heads import load_task
from keras_mega.models.mega_backbone import MegaBackbone

__all__ = [
    "backbone_cls",
    "convert_backbone_config",
    "convert_weights",
    "convert_head",
    "convert_tokenizer",
    "load_backbone",
    "load_task",
    "load_weights",
]

backbone_cls = MegaBackbone

# HF MegaConfig option -> (MegaBackbone argument, MegaConfig's default in
# transformers 4.x, for configs that omit the option); copied as is.
CONFIG = {
    "vocab_size": ("vocabulary_size", 30522),
    "num_hidden_layers": ("num_layers", 4),
    "hidden_size": ("hidden_dim", 128),
    "intermediate_size": ("intermediate_dim", 256),
    "shared_representation_size": ("shared_dim", 64),
    "ema_projection_size": ("ema_dim", 16),
    "nffn_hidden_size": ("ffn_dim", 256),
    "bidirectional": ("bidirectional", True),
    "is_decoder": ("causal", False),
    "truncation": ("truncation", None),
    "attention_activation": ("attention_activation", "softmax"),
    "relative_positional_bias": ("relative_position_bias", "rotary"),
    "max_positions": ("max_sequence_length", 2048),
    "normalization_type": ("normalization_type", "scalenorm"),
    "norm_affine": ("norm_affine", True),
    "normalize_before_mega": ("normalize_before_attention", True),
    "normalize_before_ffn": ("normalize_before_ffn", True),
    "use_normalized_ffn": ("use_normalized_ffn", True),
    "activation": ("activation", "silu"),
    "dropout_prob": ("dropout", 0.1),
    "hidden_dropout_prob": ("hidden_dropout", 0.1),
    "attention_probs_dropout_prob": ("attention_dropout", 0.1),
    "nffn_activation_dropout_prob": ("ffn_activation_dropout", 0.1),
    "use_feature_dropout": ("feature_dropout", False),
    "add_cross_attention": ("cross_attention", False),
    "initializer_range": ("initializer_range", 0.02),
    "ema_delta_alpha_range": ("ema_delta_alpha_range", 0.2),
    "ema_beta_range": ("ema_beta_range", 0.02),
    "ema_gamma_omega_range": ("ema_gamma_omega_range", 1.0),
    "pad_token_id": ("pad_token_id", 1),
    "bos_token_id": ("bos_token_id", 0),
    "eos_token_id": ("eos_token_id", 2),
}
# MegaConfig options converted by `convert_backbone_config`, and defaults.
OTHER_DEFAULTS = {
    "use_chunking": False,
    "chunk_size": -1,
    "add_token_type_embeddings": False,
    "type_vocab_size": 2,
}


def check_mega_config(hf_config, where="config.json"):
    model_type = hf_config.get("model_type")
    if model_type != "mega":
        raise ValueError(
            f"{where} describes a {model_type!r} model, not an HF Mega "
            "checkpoint (model_type 'mega')."
        )


def convert_backbone_config(transformers_config):
    """Maps an HF `MegaConfig` dict to `MegaBackbone` arguments.

    HF's `normalization_type="rmsnorm"` maps to "hf_rmsnorm", which computes
    what HF computes (a per-channel scale without normalization), so that the
    converted model keeps the checkpoint's numbers. Pass
    `normalization_type="rmsnorm"` to `from_preset` for a real RMSNorm.
    """
    check_mega_config(transformers_config)
    config = {**OTHER_DEFAULTS, **transformers_config}
    kwargs = {
        ours: config.get(theirs, default)
        for theirs, (ours, default) in CONFIG.items()
    }
    if config["use_chunking"]:
        if config["chunk_size"] is None or config["chunk_size"] <= 0:
            raise ValueError(
                "HF config has use_chunking=True but chunk_size="
                f"{config['chunk_size']}: a chunk size must be positive."
            )
        kwargs["chunk_size"] = config["chunk_size"]
    else:
        kwargs["chunk_size"] = None
    kwargs["num_segments"] = (
        config["type_vocab_size"] if config["add_token_type_embeddings"] else 0
    )
    if kwargs["normalization_type"] == "rmsnorm":
        warnings.warn(
            "This HF Mega checkpoint uses HF's 'rmsnorm', which never "
            "normalizes (it only scales). It is loaded as "
            "normalization_type='hf_rmsnorm' to keep HF's numbers; pass "
            "normalization_type='rmsnorm' for a real RMSNorm.",
            stacklevel=2,
        )
        kwargs["normalization_type"] = "hf_rmsnorm"
    return kwargs


# --- Tokenizer ---

# Special tokens `MegaTokenizer` expects, by HF's `special_tokens_map` key.
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


NO_TOKENIZER = (
    "Load without it: from_preset(..., preprocessor=None), or convert with "
    "--no-tokenizer."
)


def _read_text(preset, name):
    with open(compat.get_file(preset, name), encoding="utf-8") as f:
        return f.read()


def _check_special_tokens(preset):
    if not compat.check_file_exists(preset, "special_tokens_map.json"):
        return
    special = json.loads(_read_text(preset, "special_tokens_map.json"))
    for key, ours in SPECIAL_TOKENS.items():
        theirs = special.get(key)
        if isinstance(theirs, dict):
            theirs = theirs.get("content")
        if theirs is not None and theirs != ours:
            raise ValueError(
                f"{preset}: special_tokens_map.json sets {key}={theirs!r}; "
                f"MegaTokenizer (RoBERTa's BPE) uses {ours!r}. {NO_TOKENIZER}"
            )


def has_tokenizer(preset):
    """Whether `preset` has tokenizer files `convert_tokenizer` reads."""
    if compat.check_file_exists(
        preset, "vocab.json"
    ) and compat.check_file_exists(preset, "merges.txt"):
        return True
    return compat.check_file_exists(preset, "tokenizer.json")


def convert_tokenizer(cls, preset, **kwargs):
    """Builds `cls` (a `MegaTokenizer`) from HF tokenizer files.

    Reads `vocab.json` + `merges.txt` (RoBERTa's slow tokenizer files), or
    else the BPE model inside `tokenizer.json`.
    """
    _check_special_tokens(preset)
    if compat.check_file_exists(
        preset, "vocab.json"
    ) and compat.check_file_exists(preset, "merges.txt"):
        vocabulary = json.loads(_read_text(preset, "vocab.json"))
        merges = [
            line
            for line in _read_text(preset, "merges.txt").splitlines()
            if line and not line.startswith("#version")
        ]
    elif compat.check_file_exists(preset, "tokenizer.json"):
        model = json.loads(_read_text(preset, "tokenizer.json"))["model"]
        if model.get("type") != "BPE":
            raise ValueError(
                f"{preset}: tokenizer.json holds a {model.get('type')} model; "
                f"MegaTokenizer needs RoBERTa's byte-level BPE. {NO_TOKENIZER}"
            )
        vocabulary = model["vocab"]
        merges = [
            m if isinstance(m, str) else " ".join(m) for m in model["merges"]
        ]
    else:
        raise FileNotFoundError(
            f"No tokenizer in {preset}: expected vocab.json and merges.txt, "
            "or tokenizer.json."
        )
    return cls(vocabulary=vocabulary, merges=merges, **kwargs)


# --- Weight names ---


def _norm(layer, prefix, normalization_type):
    names = {
        "scalenorm": {"scalar": "scalar"},
        "rmsnorm": {"weight": "weight"},
        "hf_rmsnorm": {"weight": "weight"},
        "layernorm": {"weight": "gamma", "bias": "beta"},
        "batchnorm": {"weight": "gamma", "bias": "beta"},
        "syncbatchnorm": {"weight": "gamma", "bias": "beta"},
    }[normalization_type]
    result = {
        f"{prefix}.{theirs}": (getattr(layer, ours), None)
        for theirs, ours in names.items()
        if getattr(layer, ours, None) is not None
    }
    if "batchnorm" in normalization_type:
        result[f"{prefix}.running_mean"] = (layer.moving_mean, None)
        result[f"{prefix}.running_var"] = (layer.moving_variance, None)
    return result


def _rel_pos_bias(layer, prefix):
    if hasattr(layer, "rel_pos_bias"):
        return {f"{prefix}.rel_pos_bias": (layer.rel_pos_bias, None)}
    return {
        f"{prefix}.alpha": (layer.alpha, None),
        f"{prefix}.b_param": (layer.b_param, None),
    }


def _squeeze_last(array):
    """HF stores EMA parameters as `[kernel_dim, N, 1]`."""
    if array.ndim == 3 and array.shape[-1] == 1:
        return array[..., 0]
    return array


def ema_weight_map(ema, prefix):
    weights = {}
    for name in ("damping_factor", "decay_factor", "ema_expansion_matrix"):
        weights[f"{prefix}.{name}"] = (getattr(ema, name), _squeeze_last)
    for name in ("kernel_projection_matrix", "residual_weight"):
        weights[f"{prefix}.{name}"] = (getattr(ema, name), None)
    return weights


def _sublayer_map(layer, prefix, projections, rel_pos_bias=True):
    """A sublayer's dense projections, relative bias and norm."""
    weights = {}
    for name in projections:
        weights.update(dense_weights(getattr(layer, name), f"{prefix}.{name}"))
    if rel_pos_bias:
        bias = _rel_pos_bias(layer.rel_pos_bias, f"{prefix}.rel_pos_bias")
        weights.update(bias)
    norm = _norm(layer.norm, f"{prefix}.norm.norm", layer.normalization_type)
    return {**weights, **norm}


def gated_attention_weight_map(layer, prefix):
    """HF `MegaMovingAverageGatedAttention` -> `MegaGatedAttention`."""
    return {
        **ema_weight_map(layer.ema_gate, f"{prefix}.ema_gate"),
        **_sublayer_map(layer, prefix, ("v_proj", "mx_proj", "h_proj")),
        f"{prefix}.qk_weight": (layer.qk_weight, None),
        f"{prefix}.qk_bias": (layer.qk_bias, None),
    }


def cross_attention_weight_map(layer, prefix):
    """HF `MegaGatedCrossAttention` -> `MegaCrossAttention`."""
    return _sublayer_map(
        layer, prefix, ("q_proj", "k_proj", "v_proj", "h_proj")
    )


def normalized_ffn_weight_map(layer, prefix):
    """HF `MegaNormalizedFeedForwardNetwork` -> `NormalizedFFN`."""
    return _sublayer_map(layer, prefix, ("fc1", "fc2"), rel_pos_bias=False)


def block_weight_map(block, prefix):
    """HF `MegaBlock` -> `MegaBlock`."""
    weights = gated_attention_weight_map(
        block.mega_layer, f"{prefix}.mega_layer"
    )
    if block.cross_attn is not None:
        weights.update(
            cross_attention_weight_map(block.cross_attn, f"{prefix}.cross_attn")
        )
    if block.nffn is not None:
        weights.update(normalized_ffn_weight_map(block.nffn, f"{prefix}.nffn"))
    return weights


def backbone_weight_map(backbone, prefix=""):
    """HF `MegaModel` weight name -> (keras variable, transform or None)."""
    weights = {
        f"{prefix}embedding_layer.word_embeddings.weight": (
            backbone.token_embedding.embeddings,
            None,
        )
    }
    if backbone.segment_embedding is not None:
        weights[f"{prefix}embedding_layer.token_type_embeddings.weight"] = (
            backbone.segment_embedding.embeddings,
            None,
        )
    for i, block in enumerate(backbone.mega_layers):
        weights.update(block_weight_map(block, f"{prefix}layers.{i}"))
    return weights


def convert_weights(backbone, checkpoint, transformers_config=None):
    """Assigns `backbone`'s weights from `checkpoint` (HF name -> array),
    stored as `MegaModel` does or under a head class's `mega.` prefix."""
    prefix = checkpoint_prefix(checkpoint)
    load_weights(
        backbone_weight_map(backbone, prefix),
        checkpoint,
        owned_prefixes=(f"{prefix}embedding_layer.", f"{prefix}layers."),
    )


def load_backbone(preset, hf_config, cls, load_weights=True, **kwargs):
    """Builds `cls` (a `MegaBackbone`) from an HF Mega directory."""
    config = convert_backbone_config(hf_config)
    backbone = cls(**{**config, **kwargs})
    if load_weights:
        convert_weights(backbone, read_checkpoint(preset), hf_config)
    return backbone
