"""Hugging Face Mega checkpoints: config mapping and weight loading.

`transformers` is never imported here: checkpoints are read with
`safetensors` (or `torch` for `pytorch_model.bin`), so loading an HF Mega
directory needs neither transformers nor network access.
"""

import contextlib
import contextvars
import json
import warnings

import numpy as np

from keras_mega import keras_hub_compat as compat
from keras_mega.models.mega_backbone import MegaBackbone

backbone_cls = MegaBackbone

# HF MegaConfig option -> MegaBackbone argument, for options copied as is.
CONFIG_MAP = {
    "vocab_size": "vocabulary_size",
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_dim",
    "intermediate_size": "intermediate_dim",
    "shared_representation_size": "shared_dim",
    "ema_projection_size": "ema_dim",
    "nffn_hidden_size": "ffn_dim",
    "bidirectional": "bidirectional",
    "is_decoder": "causal",
    "truncation": "truncation",
    "attention_activation": "attention_activation",
    "relative_positional_bias": "relative_position_bias",
    "max_positions": "max_sequence_length",
    "normalization_type": "normalization_type",
    "norm_affine": "norm_affine",
    "normalize_before_mega": "normalize_before_attention",
    "normalize_before_ffn": "normalize_before_ffn",
    "use_normalized_ffn": "use_normalized_ffn",
    "activation": "activation",
    "dropout_prob": "dropout",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "nffn_activation_dropout_prob": "ffn_activation_dropout",
    "use_feature_dropout": "feature_dropout",
    "add_cross_attention": "cross_attention",
    "initializer_range": "initializer_range",
    "ema_delta_alpha_range": "ema_delta_alpha_range",
    "ema_beta_range": "ema_beta_range",
    "ema_gamma_omega_range": "ema_gamma_omega_range",
    "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
}
# MegaConfig defaults (transformers 4.x), for configs that omit an option.
HF_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "intermediate_size": 256,
    "ema_projection_size": 16,
    "bidirectional": True,
    "shared_representation_size": 64,
    "use_chunking": False,
    "chunk_size": -1,
    "truncation": None,
    "normalize_before_mega": True,
    "normalization_type": "scalenorm",
    "norm_affine": True,
    "activation": "silu",
    "attention_activation": "softmax",
    "dropout_prob": 0.1,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "use_feature_dropout": False,
    "use_normalized_ffn": True,
    "nffn_hidden_size": 256,
    "normalize_before_ffn": True,
    "nffn_activation_dropout_prob": 0.1,
    "max_positions": 2048,
    "add_token_type_embeddings": False,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "ema_delta_alpha_range": 0.2,
    "ema_beta_range": 0.02,
    "ema_gamma_omega_range": 1.0,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "relative_positional_bias": "rotary",
    "is_decoder": False,
    "add_cross_attention": False,
}


def check_mega_config(hf_config, where="config.json"):
    model_type = hf_config.get("model_type")
    if model_type != "mega":
        raise ValueError(
            f"{where} describes a {model_type!r} model, not an HF Mega "
            "checkpoint (model_type 'mega')."
        )


def convert_backbone_config(hf_config):
    """Maps an HF `MegaConfig` dict to `MegaBackbone` arguments.

    HF's `normalization_type="rmsnorm"` maps to "hf_rmsnorm", which computes
    what HF computes (a per-channel scale without normalization), so that the
    converted model keeps the checkpoint's numbers. Pass
    `normalization_type="rmsnorm"` to `from_preset` for a real RMSNorm.
    """
    check_mega_config(hf_config)
    config = {**HF_DEFAULTS, **hf_config}
    kwargs = {ours: config[theirs] for theirs, ours in CONFIG_MAP.items()}
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


# --- Reading checkpoints ---

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def _read_file(path):
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    except ImportError as e:
        raise ImportError(
            f"Reading {path} needs `{e.name}`: pip install "
            "'keras-mega[convert]'."
        ) from e
    except Exception as e:
        raise ValueError(
            f"Could not read the weight file {path}: it looks truncated or "
            f"corrupted ({type(e).__name__}: {e})."
        ) from e


def read_checkpoint(preset):
    """Reads all weights of an HF Mega checkpoint as numpy arrays.

    Args:
        preset: a local directory or an `hf://` handle with `model.safetensors`
            or `pytorch_model.bin` (sharded checkpoints too).

    Returns:
        dict of weight name (as stored, e.g. "mega.layers.0.nffn.fc1.weight")
        to a float numpy array.
    """
    for name in WEIGHT_FILES:
        if not compat.check_file_exists(preset, name):
            continue
        if not name.endswith(".json"):
            return _read_file(compat.get_file(preset, name))
        with open(compat.get_file(preset, name)) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        weights = {}
        for shard in shards:
            weights.update(_read_file(compat.get_file(preset, shard)))
        return weights
    raise FileNotFoundError(
        f"No weights in {preset}: expected one of {', '.join(WEIGHT_FILES)}."
    )


def assign(variable, array, hf_key, transform=None):
    """Assigns `transform(array)` to `variable`, or names both shapes.

    Args:
        variable: the Keras variable.
        array: the checkpoint's array, as stored.
        hf_key: its name in the checkpoint, for errors.
        transform: optional function from the stored layout to Keras' (e.g.
            a transpose of a torch `Linear` weight).
    """
    array = np.asarray(array)
    value = transform(array) if transform else array
    if tuple(value.shape) != tuple(variable.shape):
        raise ValueError(
            f"Weight {hf_key!r} has shape {tuple(array.shape)} in the "
            f"checkpoint, which does not fit keras-mega's {variable.path} of "
            f"shape {tuple(variable.shape)}. The checkpoint does not match "
            "its config."
        )
    variable.assign(value.astype(variable.dtype))


# --- Weight names ---


def _dense(layer, prefix):
    return {
        f"{prefix}.weight": (layer.kernel, np.transpose),
        f"{prefix}.bias": (layer.bias, None),
    }


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


def gated_attention_weight_map(layer, prefix):
    """HF `MegaMovingAverageGatedAttention` -> `MegaGatedAttention`."""
    weights = ema_weight_map(layer.ema_gate, f"{prefix}.ema_gate")
    for name in ("v_proj", "mx_proj", "h_proj"):
        weights.update(_dense(getattr(layer, name), f"{prefix}.{name}"))
    weights[f"{prefix}.qk_weight"] = (layer.qk_weight, None)
    weights[f"{prefix}.qk_bias"] = (layer.qk_bias, None)
    weights.update(_rel_pos_bias(layer.rel_pos_bias, f"{prefix}.rel_pos_bias"))
    weights.update(
        _norm(layer.norm, f"{prefix}.norm.norm", layer.normalization_type)
    )
    return weights


def cross_attention_weight_map(layer, prefix):
    """HF `MegaGatedCrossAttention` -> `MegaCrossAttention`."""
    weights = {}
    for name in ("q_proj", "k_proj", "v_proj", "h_proj"):
        weights.update(_dense(getattr(layer, name), f"{prefix}.{name}"))
    weights.update(_rel_pos_bias(layer.rel_pos_bias, f"{prefix}.rel_pos_bias"))
    weights.update(
        _norm(layer.norm, f"{prefix}.norm.norm", layer.normalization_type)
    )
    return weights


def normalized_ffn_weight_map(layer, prefix):
    """HF `MegaNormalizedFeedForwardNetwork` -> `NormalizedFFN`."""
    weights = {}
    weights.update(_dense(layer.fc1, f"{prefix}.fc1"))
    weights.update(_dense(layer.fc2, f"{prefix}.fc2"))
    weights.update(
        _norm(layer.norm, f"{prefix}.norm.norm", layer.normalization_type)
    )
    return weights


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


# Stored tensors that are not weights.
BUFFER_SUFFIXES = ("._float_tensor", ".num_batches_tracked", ".token_type_ids")


def checkpoint_prefix(checkpoint):
    """HF head classes store the backbone under "mega."; MegaModel does not."""
    if any(key.startswith("mega.") for key in checkpoint):
        return "mega."
    return ""


_PROGRESS = contextvars.ContextVar("keras_mega_progress", default=False)


@contextlib.contextmanager
def show_progress():
    """Shows a progress bar, one step per weight, while weights load."""
    token = _PROGRESS.set(True)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def load_weights(weight_map, checkpoint, owned_prefixes, ignored=()):
    """Assigns every weight in `weight_map`, strictly.

    Args:
        weight_map: HF name -> (variable, transform).
        checkpoint: HF name -> array.
        owned_prefixes: names under these prefixes belong to the model being
            loaded: any of them that the map does not know is an error.
        ignored: names known to belong to something else (e.g. a head).
    """
    missing = [key for key in weight_map if key not in checkpoint]
    if missing:
        raise ValueError(
            f"The checkpoint lacks {len(missing)} weight(s) that the config "
            f"implies, e.g. {missing[:5]}. The checkpoint does not match its "
            "config."
        )
    unexpected = [
        key
        for key in checkpoint
        if key.startswith(owned_prefixes)
        and key not in weight_map
        and key not in ignored
        and not key.endswith(BUFFER_SUFFIXES)
    ]
    if unexpected:
        raise ValueError(
            f"The checkpoint has {len(unexpected)} weight(s) that its config "
            f"does not use, e.g. {unexpected[:5]}. The checkpoint does not "
            "match its config."
        )
    progress = None
    if _PROGRESS.get():
        import keras

        progress = keras.utils.Progbar(len(weight_map), unit_name="weight")
    for step, (key, (variable, transform)) in enumerate(weight_map.items()):
        assign(variable, checkpoint[key], key, transform)
        if progress is not None:
            progress.update(step + 1)


def load_backbone_weights(backbone, checkpoint):
    prefix = checkpoint_prefix(checkpoint)
    pooler = [k for k in checkpoint if k.startswith(f"{prefix}pooler.")]
    load_weights(
        backbone_weight_map(backbone, prefix),
        checkpoint,
        owned_prefixes=(f"{prefix}embedding_layer.", f"{prefix}layers."),
    )
    return pooler


def load_backbone(preset, hf_config, cls, load_weights=True, **kwargs):
    """Builds `cls` (a `MegaBackbone`) from an HF Mega directory."""
    config = convert_backbone_config(hf_config)
    backbone = cls(**{**config, **kwargs})
    if load_weights:
        load_backbone_weights(backbone, read_checkpoint(preset))
    return backbone
