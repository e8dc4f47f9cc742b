"""Reading HF checkpoints, and assigning their weights strictly.

`transformers` is never imported here: checkpoints are read with
`safetensors` (or `torch` for `pytorch_model.bin`), so loading an HF Mega
directory needs neither transformers nor network access. Weights are
assigned from a weight map, `{hf_name: (keras variable, transform)}`:
every weight the map names must be in the checkpoint, with its shape, and
every checkpoint weight under the prefixes being loaded must be in the map.
"""

import contextlib
import contextvars
import json

import numpy as np

from keras_mega import keras_hub_compat as compat

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


def dense_weights(layer, prefix):
    """A torch `Linear` (`prefix.weight`, `prefix.bias`) -> a `Dense`."""
    return {
        f"{prefix}.weight": (layer.kernel, np.transpose),
        f"{prefix}.bias": (layer.bias, None),
    }


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
