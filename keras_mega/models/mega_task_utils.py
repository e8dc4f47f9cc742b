"""Helpers of the Mega tasks: inputs, head layers, label checks, presets.

The tasks' shared behaviour (the mixins) is in `mega_task.py`.
"""

import warnings

import keras
import numpy as np

from keras_mega.backend import is_concrete


def task_inputs(backbone):
    """The task's inputs and the dict to call `backbone` with.

    Mega's preprocessors, like HF's RoBERTa tokenizer, produce no segment
    ids: a backbone with segment embeddings (HF `add_token_type_embeddings`)
    gets all-zero segment ids, which is what HF's `MegaModel` uses when
    `token_type_ids` is not given.
    """
    inputs = {
        name: tensor
        for name, tensor in backbone.input.items()
        if name != "segment_ids"
    }
    return inputs, with_segment_ids(backbone, inputs)


def with_segment_ids(backbone, inputs):
    """`inputs`, plus all-zero `segment_ids` if `backbone` takes them."""
    inputs = dict(inputs)
    if "segment_ids" in backbone.input:
        inputs["segment_ids"] = keras.ops.zeros_like(inputs["token_ids"])
    return inputs


def kernel_initializer(backbone):
    """HF's initialization of the head weights: N(0, initializer_range)."""
    stddev = getattr(backbone, "initializer_range", 0.02)
    return keras.initializers.RandomNormal(stddev=stddev)


def head_dense(backbone, units, name, activation=None):
    """A dense layer of a task head, initialized as HF's."""
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=kernel_initializer(backbone),
        dtype=backbone.dtype_policy,
        name=name,
    )


def head_dropout(backbone, rate, name):
    """A dropout layer of a task head, in the backbone's dtype policy."""
    return keras.layers.Dropout(rate, dtype=backbone.dtype_policy, name=name)


def classifier_output(backbone, num_classes, activation, dropout):
    """The `output_dropout` and `logits` layers of HF's classifier heads."""
    return (
        head_dropout(backbone, dropout, "output_dropout"),
        head_dense(backbone, num_classes, "logits", activation=activation),
    )


def check_vocabulary(backbone, preprocessor):
    """A tokenizer with more ids than the backbone embeds is an error."""
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "vocabulary", None) is None:
        return
    size = tokenizer.vocabulary_size()
    if size > backbone.vocabulary_size:
        raise ValueError(
            f"The tokenizer has {size} tokens but the backbone embeds only "
            f"vocabulary_size={backbone.vocabulary_size}: ids "
            f">= {backbone.vocabulary_size} would be out of range."
        )


def check_num_classes(num_classes, cls_name):
    if num_classes is None:
        raise ValueError(
            f"{cls_name} needs `num_classes` (the label count): it is not "
            "known. Pass num_classes=..., or load an HF checkpoint of the "
            "matching head class, whose config gives it."
        )
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer, got {num_classes!r}."
        )
    return int(num_classes)


# --- Label names ---


def check_id2label(id2label, num_classes, cls_name):
    """`id2label` (HF's label names) as `{int id: str name}`, or None.

    Takes a dict keyed by ids (ints, or their strings as in JSON and HF's
    config.json) or a list of names in id order; it must name exactly the
    ids `0 .. num_classes - 1`.
    """
    if id2label is None:
        return None
    if isinstance(id2label, (list, tuple)):
        id2label = dict(enumerate(id2label))
    if not isinstance(id2label, dict):
        raise TypeError(
            f"{cls_name}: id2label must be a dict of label id to name, or a "
            f"list of names; got {type(id2label).__name__}."
        )
    try:
        result = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ValueError(
            f"{cls_name}: id2label keys must be label ids 0 to "
            f"{num_classes - 1}; got {sorted(id2label, key=str)}."
        ) from None
    if sorted(result) != list(range(num_classes)):
        raise ValueError(
            f"{cls_name}: id2label names ids {sorted(result)} but "
            f"num_classes={num_classes} needs exactly the ids 0 to "
            f"{num_classes - 1}."
        )
    return dict(sorted(result.items()))


def serialize_id2label(id2label):
    """JSON form (string keys, as HF's config.json) of an `id2label`."""
    if id2label is None:
        return None
    return {str(k): v for k, v in id2label.items()}


def label2id(id2label):
    if id2label is None:
        return None
    return {name: i for i, name in id2label.items()}


# --- Label checks in `fit` / `evaluate` (concrete arrays, once per call) ---


def label_values(y):
    """The values of `y` as a numpy array, or None when they are not at
    hand (a dataset, a generator, a traced tensor, strings)."""
    if y is None or isinstance(y, (str, bytes, dict)):
        return None
    if type(y).__name__ == "RaggedTensor":
        y = y.flat_values
    if isinstance(y, (list, tuple)):
        try:
            values = np.asarray(y)
        except ValueError:  # Ragged nesting.
            values = None
        if values is None or values.dtype == object:
            flat = []
            for item in y:
                item = label_values(item)
                if item is None:
                    return None
                flat.append(np.ravel(item))
            return np.concatenate(flat) if flat else np.zeros((0,))
    elif hasattr(y, "__array__") or keras.ops.is_tensor(y):
        if not is_concrete(y):
            return None
        try:
            values = np.asarray(keras.ops.convert_to_numpy(y))
        except Exception:  # noqa: BLE001  (e.g. a tensor on another device)
            try:
                values = np.asarray(y)
            except Exception:  # noqa: BLE001
                return None
    else:
        return None
    if not (
        np.issubdtype(values.dtype, np.number)
        or np.issubdtype(values.dtype, np.bool_)
    ):
        return None
    return values


def check_label_range(values, num_classes, what, allowed=(), hint=""):
    """Refuses labels outside `[0, num_classes)` (except `allowed` ones)."""
    if values is None or values.size == 0:
        return
    values = values.reshape(-1)
    bad = (values < 0) | (values >= num_classes)
    for value in allowed:
        bad &= values != value
    if bad.any():
        value = values[np.argmax(bad)]
        value = int(value) if float(value).is_integer() else float(value)
        raise ValueError(
            f"Label {value} is out of range: {what} (0 to "
            f"{num_classes - 1}).{hint}"
        )


def loss_ignore_class(model):
    """The `ignore_class` of the compiled loss, if any."""
    loss = getattr(model, "loss", None)
    return getattr(loss, "ignore_class", None)


def sequence_length_of(x):
    """The sequence length of preprocessed inputs `x`, or None."""
    if not isinstance(x, dict) or x.get("token_ids") is None:
        return None
    shape = getattr(x["token_ids"], "shape", None)
    if shape is None:
        shape = np.shape(x["token_ids"])
    return None if shape is None or not len(shape) else shape[-1]


def warn_new_head(preset, cls_name, trained, requested, stacklevel=3):
    """The warning for a `num_classes` that discards a trained head."""
    warnings.warn(
        f"{preset} has a trained {cls_name} head for {trained} labels, but "
        f"num_classes={requested}: a new {requested}-class head starts from "
        "random weights (the backbone keeps its trained weights). Leave "
        f"num_classes out, or pass num_classes={trained}, to keep the "
        "trained head.",
        stacklevel=stacklevel,
    )


def is_keras_preset(preset):
    """Whether `preset` is a Keras preset (not an HF directory)."""
    from keras_mega import keras_hub_compat as compat

    if not isinstance(preset, str) or not compat.check_file_exists(
        preset, "config.json"
    ):
        return False
    return "registered_name" in compat.load_json(preset, "config.json")


def saved_task_config(preset, cls):
    """The `task.json` config of a Keras preset holding a `cls`, or None."""
    from keras_mega import keras_hub_compat as compat

    if not isinstance(preset, str) or not compat.check_file_exists(
        preset, "task.json"
    ):
        return None
    config = compat.load_json(preset, "task.json")
    saved_cls = keras.saving.get_registered_object(
        config.get("registered_name", "")
    )
    if not (isinstance(saved_cls, type) and issubclass(saved_cls, cls)):
        return None
    return config.get("config", {})
