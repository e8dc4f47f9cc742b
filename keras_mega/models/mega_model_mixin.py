"""Behaviour shared by every keras-mega model (backbone and tasks)."""

import contextlib
import logging
import threading
import types

import keras
import numpy as np

from keras_mega.backend import is_concrete
from keras_mega.models.mega_preset_io import MegaPresetMixin
from keras_mega.models.mega_quantization import MegaQuantizationMixin


def host_values(token_ids):
    """The token ids copied to the host (a NumPy array).

    The one place the input checks read values off the device: on a GPU
    this is a sync, so it runs once per `fit`/`predict`/`evaluate`, never
    per step (`tests/test_host_checks.py` counts the calls).
    """
    return np.asarray(keras.ops.convert_to_numpy(token_ids))


def check_token_ids(token_ids, vocabulary_size):
    """Raises a `ValueError` naming the first id outside the vocabulary.

    Only concrete values are checked (eager calls, and arrays handed to
    `fit`/`predict`/`evaluate`); traced values pass through.
    """
    if token_ids is None or _STATE.ids_checked or not is_concrete(token_ids):
        return
    ids = host_values(token_ids)
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


def has_concrete_ids(x):
    """Whether `x` is an input dict whose `token_ids` hold values."""
    if not isinstance(x, dict) or x.get("token_ids") is None:
        return False
    return is_concrete(x["token_ids"])


class _CheckState(threading.local):
    """Which calls still check their token ids (per thread).

    `scopes` maps `id(model)` to the scope of the `fit`/`predict`/
    `evaluate` running on it (or on the task holding it: JAX's steps run
    the task's `call`, not its `__call__`, so the backbone sees the inputs
    first). `depth` counts the checked `__call__`s under way: a model
    called inside one (the backbone inside its task) has had its ids
    checked already. `ids_checked` is set while a model whose ids were
    checked runs its other input checks (shapes, `document_ids`, ...):
    those still run on every call, without reading any values.
    """

    def __init__(self):
        self.scopes = {}
        self.depth = 0
        self.ids_checked = False


_STATE = _CheckState()


@contextlib.contextmanager
def _input_check_scope(model, checked, validation_checked=False):
    """Marks `model` (and the Mega models inside it) as inside a `fit`/
    `predict`/`evaluate` call.

    The scope's `done` says the inputs were checked up front (the steps
    check nothing); else (a dataset or generator) the first step with
    concrete ids checks them and sets it. `validation_checked` (in `fit`)
    says whether `validation_data` was checked up front.
    """
    scope = types.SimpleNamespace(
        done=checked, validation_checked=validation_checked
    )
    keys = [id(model)] + [
        id(layer)
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, MegaModelMixin)
    ]
    previous = {key: _STATE.scopes.get(key) for key in keys}
    _STATE.scopes.update(dict.fromkeys(keys, scope))
    try:
        yield scope
    finally:
        for key, outer in previous.items():
            if outer is None:
                _STATE.scopes.pop(key, None)
            else:
                _STATE.scopes[key] = outer


@contextlib.contextmanager
def _setting(state, name, value):
    """Sets `state.<name>` to `value` for the duration."""
    previous = getattr(state, name)
    setattr(state, name, value)
    try:
        yield
    finally:
        setattr(state, name, previous)


def _not_grain_threads(record):
    return "is smaller than num_threads" not in record.getMessage()


@contextlib.contextmanager
def quiet_grain_threads():
    """Silences the warning Grain logs for each pipeline keras-hub 0.32
    builds in `fit`/`predict`/`evaluate` from arrays or strings: its
    read-ahead (8 batches) is below Grain's thread count (16), a choice of
    keras-hub's that a user cannot change."""
    absl = logging.getLogger("absl")
    absl.addFilter(_not_grain_threads)
    try:
        yield
    finally:
        absl.removeFilter(_not_grain_threads)


# Inputs whose last axis is the token sequence.
SEQUENCE_INPUTS = ("token_ids", "padding_mask", "segment_ids", "document_ids")


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
        """Refuses bad inputs `x` (token ids out of range, ...); subclasses
        add their checks. Reads only concrete values."""
        vocabulary_size = self._vocabulary_size()
        if vocabulary_size is not None and isinstance(x, dict):
            check_token_ids(x.get("token_ids"), vocabulary_size)

    def _checked_inputs(self, x):
        """Checks `x`; returns whether its values were at hand (concrete
        token ids), so that the steps need not check them again."""
        self._check_inputs(x)
        return has_concrete_ids(x)

    def __call__(self, *args, **kwargs):
        # Eager direct calls check every time. Inside `fit`/`predict`/
        # `evaluate` the inputs were checked once up front (or the first
        # batch of a dataset is), and a model called inside a checked call
        # (the backbone in its task) does not read them again: no per-step
        # copy of the ids to the host.
        scope = _STATE.scopes.get(id(self))
        skip = _STATE.depth > 0 or (scope is not None and scope.done)
        checked = False
        if args and not skip:
            checked = self._checked_inputs(args[0])
            if checked and scope is not None:
                scope.done = True
        elif args:
            # The other checks read no values: they run as before.
            with _setting(_STATE, "ids_checked", True):
                self._check_inputs(args[0])
        if not (checked or skip):
            return super().__call__(*args, **kwargs)
        with _setting(_STATE, "depth", _STATE.depth + 1):
            return super().__call__(*args, **kwargs)

    def _check_labels(self, x, y):
        """Hook: refuses labels the task's head cannot have (tasks).

        Called once per `fit`/`evaluate` with what the user passed; only
        concrete values are looked at, never datasets or traced tensors.
        """

    def fit(self, x=None, y=None, *args, **kwargs):
        checked = self._checked_inputs(x)
        self._check_labels(x, y)
        validation = kwargs.get("validation_data")
        validation_checked = False
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            validation_checked = self._checked_inputs(validation[0])
            self._check_labels(validation[0], validation[1])
        with _input_check_scope(self, checked, validation_checked):
            with quiet_grain_threads():
                return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        # `fit` evaluates its validation data every epoch; it checked arrays
        # up front, and the first batch of a dataset is checked here.
        if kwargs.get("_use_cached_eval_dataset"):
            scope = _STATE.scopes.get(id(self))
            checked = scope is not None and scope.validation_checked
        else:
            checked = self._checked_inputs(x)
            self._check_labels(x, y)
        with _input_check_scope(self, checked), quiet_grain_threads():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        checked = self._checked_inputs(x)
        with _input_check_scope(self, checked), quiet_grain_threads():
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
