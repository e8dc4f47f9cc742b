"""Behaviour shared by every keras-mega model and preprocessing layer."""

import contextlib
import contextvars
import json
import os
import shutil
import uuid

import keras
import numpy as np

from keras_mega.backend import is_concrete

# Version of the preset layout keras-mega writes; presets of a newer format
# are refused with a clear error instead of failing somewhere inside.
PRESET_FORMAT_VERSION = 1
PRESET_FORMAT_FILE = "keras_mega.json"


def check_token_ids(token_ids, vocabulary_size):
    """Raises a `ValueError` naming the first id outside the vocabulary.

    Only concrete values are checked (eager calls, and arrays handed to
    `fit`/`predict`/`evaluate`); traced values pass through.
    """
    if token_ids is None or not is_concrete(token_ids):
        return
    ids = np.asarray(keras.ops.convert_to_numpy(token_ids))
    if ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        return
    bad = (ids < 0) | (ids >= vocabulary_size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Token id {int(ids[where])} at index {where} is out of range: "
            f"the vocabulary has {vocabulary_size} ids (0 to "
            f"{vocabulary_size - 1}). Check the tokenizer matches the model."
        )


_SAVING = contextvars.ContextVar("keras_mega_saving", default=False)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary sibling of `path` that replaces `path` on success.

    The temporary directory starts as a copy of an existing `path`, so a
    save adds to a preset as keras-hub's does (a tokenizer saved into a
    model's preset keeps the model). On an error (or an interrupt) the
    temporary directory is removed and `path` is left as it was. Saves
    nested in one (a task saving its backbone) write into it directly.
    """
    if _SAVING.get():
        yield path
        return
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = os.path.join(parent, f".{os.path.basename(path)}.partial-{tag}")
    old = os.path.join(parent, f".{os.path.basename(path)}.old-{tag}")
    if os.path.isdir(path):
        shutil.copytree(path, tmp)
    else:
        os.makedirs(tmp)
    token = _SAVING.set(True)
    try:
        yield tmp
        with open(os.path.join(tmp, PRESET_FORMAT_FILE), "w") as f:
            from keras_mega import __version__

            json.dump(
                {
                    "format_version": PRESET_FORMAT_VERSION,
                    "keras_mega_version": __version__,
                },
                f,
            )
        if os.path.exists(path):
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(path):
            os.rename(old, path)
        raise
    finally:
        _SAVING.reset(token)
    shutil.rmtree(old, ignore_errors=True)


def check_preset_format(preset_dir):
    """Refuses presets written by a newer, incompatible keras-mega."""
    file = os.path.join(str(preset_dir), PRESET_FORMAT_FILE)
    if not os.path.exists(file):
        return
    with open(file) as f:
        info = json.load(f)
    version = info.get("format_version", 0)
    if version > PRESET_FORMAT_VERSION:
        from keras_mega import __version__

        raise ValueError(
            f"The preset {preset_dir} was written by keras-mega "
            f"{info.get('keras_mega_version', '?')} in preset format "
            f"{version}; this keras-mega ({__version__}) reads formats up to "
            f"{PRESET_FORMAT_VERSION}. Upgrade keras-mega to load it."
        )


class MegaModelMixin:
    """Input checks and atomic `save_to_preset` for keras-mega classes.

    Subclasses name their vocabulary size through `_vocabulary_size()`.
    """

    def _vocabulary_size(self):
        backbone = getattr(self, "backbone", self)
        return getattr(backbone, "vocabulary_size", None)

    def _check_inputs(self, x):
        vocabulary_size = self._vocabulary_size()
        if vocabulary_size is not None and isinstance(x, dict):
            check_token_ids(x.get("token_ids"), vocabulary_size)

    def __call__(self, *args, **kwargs):
        if args:
            self._check_inputs(args[0])
        return super().__call__(*args, **kwargs)

    def fit(self, x=None, *args, **kwargs):
        self._check_inputs(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_inputs(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_inputs(x)
        return super().predict(x, *args, **kwargs)

    def export(self, filepath, format="tf_saved_model", sequence_length=None, **kwargs):
        """Exports for serving (`keras.Model.export`), e.g. a TF SavedModel
        whose `serve` signature takes the model's input dict.

        TensorFlow exports any batch size and sequence length. JAX (through
        jax2tf) needs a fixed `sequence_length`, to which inputs are padded
        (the padding mask keeps the results exact); the batch stays free.
        The torch backend cannot export dict inputs in Keras 3: save a
        preset and export it from TensorFlow or JAX, where it loads as is.

        Args:
            filepath: where to write.
            format: "tf_saved_model" (see above). "onnx" is not supported:
                the FFT of the EMA has no ONNX Runtime kernel.
            sequence_length: int. Fixed length of exported inputs (JAX).
        """
        if format == "onnx":
            raise ValueError(
                "ONNX export is not supported: ONNX Runtime has no kernel for "
                "the RFFT op of Mega's EMA. Export format='tf_saved_model'."
            )
        backend = keras.backend.backend()
        if backend == "torch":
            raise ValueError(
                "Keras cannot export models with dict inputs on the torch "
                "backend. Save a preset (`save_to_preset`), load it with "
                "KERAS_BACKEND=tensorflow or jax, and export from there."
            )
        if backend == "jax" and "input_signature" not in kwargs:
            if sequence_length is None:
                raise ValueError(
                    "Exporting on JAX needs a fixed `sequence_length` (pad "
                    "inputs to it); TensorFlow exports any length."
                )
            signature, shapes = {}, {}
            for name, tensor in self.input.items():
                shape = (None,) + tuple(
                    sequence_length if d is None else d for d in tensor.shape[1:]
                )
                signature[name] = keras.InputSpec(shape=shape, dtype=tensor.dtype)
                shapes[name] = "(b, " + ", ".join(map(str, shape[1:])) + ")"
            kwargs["input_signature"] = [signature]
            kwargs.setdefault("jax2tf_kwargs", {"polymorphic_shapes": [shapes]})
        return super().export(filepath, format=format, **kwargs)

    @classmethod
    def from_preset(cls, preset, *args, **kwargs):
        """keras-hub's `from_preset`, failing fast offline for remote
        handles and refusing presets of a newer keras-mega."""
        from keras_mega.models.mega_presets import check_reachable

        check_reachable(preset, cls.__name__)
        return super().from_preset(preset, *args, **kwargs)

    def save_to_preset(self, preset_dir, *args, **kwargs):
        """Saves to `preset_dir` atomically: a failed or interrupted save
        leaves no half-written preset and keeps an existing one."""
        with atomic_directory(preset_dir) as tmp:
            super().save_to_preset(tmp, *args, **kwargs)
