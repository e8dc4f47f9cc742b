"""What the Mega task models share: inputs, head layers, checks, `compile`."""

import inspect
import warnings

import keras
import numpy as np

from keras_mega.backend import is_concrete
from keras_mega.layers.functional import check_kwargs
from keras_mega.models.mega_lm_head import MegaLMHead
from keras_mega.models.mega_model_mixin import MegaModelMixin


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


class MegaLabelNamesMixin:
    """`id2label` (checked against `num_classes` when set) and its inverse
    `label2id`, HF's label names, for the classifiers."""

    @property
    def id2label(self):
        """HF's `id2label`: label id -> name (None without names)."""
        names = getattr(self, "_id2label", None)
        return None if names is None else dict(names)

    @id2label.setter
    def id2label(self, value):
        self._id2label = check_id2label(
            value, self.num_classes, type(self).__name__
        )

    @property
    def label2id(self):
        """HF's `label2id`: label name -> id (None without names)."""
        return label2id(self.id2label)


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


# --- Task arguments ---

# What keras-hub's `Task` (a functional `keras.Model`) takes besides a
# task's own arguments.
MODEL_KWARGS = ("inputs", "outputs", "name", "trainable", "compile", "dtype")


def check_task_kwargs(task, kwargs):
    """Refuses arguments the task would drop silently.

    A functional `keras.Model` ignores keyword arguments it does not know,
    so a misspelled option (or a backbone option given to a task built
    around an existing backbone) would vanish without a word.
    """
    cls = type(task)
    check_kwargs(
        cls,
        kwargs,
        allowed=MODEL_KWARGS,
        hint="Backbone options (e.g. chunk_size, dtype) go to MegaBackbone, "
        "or to from_preset() when loading.",
    )
    dtype = kwargs.get("dtype")
    backbone = getattr(task, "backbone", None)
    if dtype is not None and backbone is not None:
        policy = keras.dtype_policies.get(dtype)
        if policy.name != backbone.dtype_policy.name:
            raise ValueError(
                f"{cls.__name__}(dtype={policy.name!r}): a task computes in "
                f"its backbone's dtype ({backbone.dtype_policy.name!r}). "
                "Build the backbone with that dtype, or pass dtype to "
                "from_preset()."
            )


def backbone_arguments(task_cls, kwargs):
    """Splits `from_preset` kwargs into the backbone's and the task's.

    Options of `task_cls.backbone_cls` that the task does not take itself
    go to the backbone (a name both take, such as `dropout`, is the
    task's); anything else stays with the task, which refuses what it does
    not know.
    """
    backbone_cls = getattr(task_cls, "backbone_cls", None)
    if backbone_cls is None:
        return {}, kwargs
    task_params = set(inspect.signature(task_cls.__init__).parameters)
    backbone_params = set(inspect.signature(backbone_cls.__init__).parameters)
    backbone_params -= {"self", "args", "kwargs", "name", "trainable"}
    to_backbone = {
        k: v
        for k, v in kwargs.items()
        if k in backbone_params and k not in task_params
    }
    rest = {k: v for k, v in kwargs.items() if k not in to_backbone}
    return to_backbone, rest


class MegaTaskBase(MegaModelMixin):
    """What every Mega task shares: argument checks, and task weights
    saved and loaded without optimizer state."""

    def __init__(self, *args, **kwargs):
        check_task_kwargs(self, kwargs)
        super().__init__(*args, **kwargs)

    @classmethod
    def _preset_kwargs(cls, preset, kwargs, load_weights=True):
        """Backbone options passed to `from_preset` of a Keras preset.

        keras-hub hands a task's `from_preset` kwargs (but `dtype`) to the
        task; options of the backbone (e.g. `chunk_size`) that the task
        does not take build the backbone instead, from the same preset.
        (HF directories: `hf_heads.load_task` does the same.)
        """
        kwargs = super()._preset_kwargs(preset, kwargs, load_weights)
        if "backbone" in kwargs or not is_keras_preset(preset):
            return kwargs
        to_backbone, rest = backbone_arguments(cls, kwargs)
        if not to_backbone:
            return kwargs
        rest["backbone"] = cls.backbone_cls.from_preset(
            preset,
            load_weights=load_weights,
            dtype=rest.pop("dtype", None),
            **to_backbone,
        )
        return rest

    def compile_from_config(self, config):
        """Compiles as saved, on `keras.saving.load_model`.

        Keras skips this (with a warning) for models with their own
        `compile()`; the tasks' takes Keras' arguments, so the saved loss,
        metrics and optimizer come back, and the optimizer is built so that
        its saved state loads (instead of being skipped with a warning).
        """
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _task_weights_objects_to_skip(self):
        skip = list(self.backbone._flatten_layers())
        if getattr(self, "optimizer", None) is not None:
            skip.append(self.optimizer)
        return skip

    def save_task_weights(self, filepath):
        """Saves the weights not in the backbone, without optimizer state.

        A preset holds a model, not a training run: `from_preset` compiles
        the task afresh, so the optimizer's variables would only be read
        back to be skipped (with a warning).
        """
        if not str(filepath).endswith(".weights.h5"):
            raise ValueError(
                "The filename must end in `.weights.h5`. "
                f"Received: filepath={filepath}"
            )
        if not self.has_task_weights():
            raise ValueError(
                f"Task {self} has no weights not in the `backbone`. "
                "`save_task_weights()` has nothing to save."
            )
        keras.saving.save_weights(
            self,
            filepath=filepath,
            objects_to_skip=self._task_weights_objects_to_skip(),
        )

    def load_task_weights(self, filepath):
        """Loads the weights not in the backbone; optimizer state in the
        file (presets written before it was left out) is not read."""
        if not str(filepath).endswith(".weights.h5"):
            raise ValueError(
                "The filename must end in `.weights.h5`. "
                f"Received: filepath={filepath}"
            )
        keras.saving.load_weights(
            self,
            filepath,
            objects_to_skip=self._task_weights_objects_to_skip(),
        )


class MegaTaskMixin(MegaTaskBase):
    """`MegaModelMixin` plus the `compile()` of the Mega task heads.

    `"auto"` arguments of `compile()` take the task's defaults: Adam with
    learning rate 5e-5, and the loss and metrics that `_auto_loss()`,
    `_auto_metrics()` and `_auto_weighted_metrics()` give (by default
    sparse categorical cross-entropy, from logits unless the task's
    `activation` is softmax, and sparse categorical accuracy).
    """

    def _from_logits(self, probabilities):
        """Whether outputs are logits: `activation` is not `probabilities`."""
        activation = keras.activations.get(getattr(self, "activation", None))
        return activation != probabilities

    @classmethod
    def _preset_kwargs(cls, preset, kwargs, load_weights=True):
        """A `num_classes` equal to a saved classifier's keeps its head.

        keras-hub starts a new head whenever `num_classes` is passed; a
        count equal to the saved head's loads the trained head instead,
        and another count warns, naming both.
        """
        kwargs = super()._preset_kwargs(preset, kwargs, load_weights)
        if "num_classes" not in kwargs or "num_classes" not in (
            inspect.signature(cls.__init__).parameters
        ):
            return kwargs
        saved = saved_task_config(preset, cls)
        trained = None if saved is None else saved.get("num_classes")
        if trained is None:
            return kwargs
        kwargs = dict(kwargs)
        requested = kwargs["num_classes"]
        if requested is None or requested == trained:
            del kwargs["num_classes"]
            return kwargs
        warn_new_head(preset, cls.__name__, trained, requested, stacklevel=4)
        # The saved label names are those of the old head.
        kwargs.setdefault("id2label", None)
        return kwargs

    def _auto_loss(self):
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=self._from_logits(keras.activations.softmax)
        )

    def _auto_metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy()]

    def _auto_weighted_metrics(self):
        return None

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        metrics="auto",
        weighted_metrics="auto",
        **kwargs,
    ):
        """Configures the task for training.

        Args:
            optimizer: `"auto"` (Adam, learning rate 5e-5) or any Keras
                optimizer.
            loss: `"auto"` (the task's loss: see the class docstring) or any
                Keras loss.
            metrics: `"auto"` (the task's metrics) or a list of metrics.
            weighted_metrics: `"auto"` (the task's metrics weighted by
                `sample_weight`, if any) or a list of metrics.
            **kwargs: passed to `keras.Model.compile`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(5e-5)
        if loss == "auto":
            loss = self._auto_loss()
        if metrics == "auto":
            metrics = self._auto_metrics()
        if weighted_metrics == "auto":
            weighted_metrics = self._auto_weighted_metrics()
        super().compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            **kwargs,
        )


class MegaLMTaskMixin(MegaTaskBase):
    """What `MegaMaskedLM` and `MegaCausalLM` share: their LM head."""

    def _lm_head(self, backbone, use_hidden_dense, tie_weights, name):
        """HF's LM head on `backbone`, tied to its token embedding or not."""
        return MegaLMHead(
            vocabulary_size=backbone.vocabulary_size,
            hidden_dim=backbone.hidden_dim,
            use_hidden_dense=use_hidden_dense,
            token_embedding=backbone.token_embedding if tie_weights else None,
            kernel_initializer=kernel_initializer(backbone),
            dtype=backbone.dtype_policy,
            name=name,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "use_hidden_dense": self.use_hidden_dense,
                "tie_weights": self.tie_weights,
            }
        )
        return config
