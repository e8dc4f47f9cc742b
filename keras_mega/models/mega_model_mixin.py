"""Behaviour shared by every keras-mega model (backbone and tasks)."""

import keras
import numpy as np

from keras_mega.backend import is_concrete
from keras_mega.models.mega_preset_io import MegaPresetMixin
from keras_mega.models.mega_quantization import MegaQuantizationMixin


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


# Inputs whose last axis is the token sequence.
SEQUENCE_INPUTS = ("token_ids", "padding_mask", "segment_ids")


def export_shape(name, shape, sequence_length):
    """The JAX export shape of input `name` and its jax2tf shape symbols.

    The sequence axis gets the fixed `sequence_length`; every other unknown
    axis stays free (the batch `b`, the choices of multiple choice `d1`,
    shared by the inputs that have it, and the masked positions of a masked
    LM, named after their input).
    """
    dims, symbols = [None], ["b"]
    for axis, size in enumerate(shape[1:], start=1):
        if size is None and name in SEQUENCE_INPUTS and axis == len(shape) - 1:
            size = sequence_length
        dims.append(size)
        if size is not None:
            symbols.append(str(size))
        else:
            symbols.append(
                f"d{axis}" if name in SEQUENCE_INPUTS else f"{name}{axis}"
            )
    return tuple(dims), symbols


class MegaModelMixin(MegaQuantizationMixin, MegaPresetMixin):
    """Input checks and export, plus `MegaPresetMixin`'s preset handling.

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

    def _check_labels(self, x, y):
        """Hook: refuses labels the task's head cannot have (tasks).

        Called once per `fit`/`evaluate` with what the user passed; only
        concrete values are looked at, never datasets or traced tensors.
        """

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_inputs(x)
        self._check_labels(x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_inputs(validation[0])
            self._check_labels(validation[0], validation[1])
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        # `fit` evaluates its validation data every epoch; it checked it.
        if not kwargs.get("_use_cached_eval_dataset"):
            self._check_inputs(x)
            self._check_labels(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_inputs(x)
        return super().predict(x, *args, **kwargs)

    def export(
        self, filepath, format="tf_saved_model", sequence_length=None, **kwargs
    ):
        """Exports for serving (`keras.Model.export`), e.g. a TF SavedModel
        whose `serve` signature takes the model's input dict.

        TensorFlow exports any batch size and sequence length. JAX (through
        jax2tf) needs a fixed `sequence_length`, to which inputs are padded
        (the padding mask keeps the results exact); the batch, the number of
        choices (multiple choice) and of masked positions (masked LM) stay
        free.
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
                shape, symbols = export_shape(
                    name, tensor.shape, sequence_length
                )
                signature[name] = keras.InputSpec(
                    shape=shape, dtype=tensor.dtype
                )
                shapes[name] = "(" + ", ".join(symbols) + ")"
            kwargs["input_signature"] = [signature]
            kwargs.setdefault("jax2tf_kwargs", {"polymorphic_shapes": [shapes]})
        return super().export(filepath, format=format, **kwargs)
