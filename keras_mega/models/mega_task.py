"""What keras-mega's tasks add to keras-hub's task classes: the one place.

Every task is `MegaX(MegaTask, <keras-hub task>)` (the classifiers, multiple
choice and question answering through `MegaHeadTask`; the classifiers also
take `MegaLabelNamesMixin`). keras-hub's class does the rest: the
functional model, `generate`, `fit` on strings through the preprocessor,
presets. What is added here, and why:

- through `MegaModelMixin` (shared with the backbone): token ids checked
  once per `fit`/`predict`/`evaluate`, `export` with a fixed JAX sequence
  length, a checked `quantize`, atomic `save_to_preset` and `from_preset`
  of `hf://` handles;
- `MegaTask`: arguments a functional model would drop silently are
  refused; a tokenizer larger than the embedding is refused; `get_config`
  derived from the constructor's arguments; backbone options given to a
  task's `from_preset` build its backbone; a `num_classes` equal to a saved
  head's keeps that head; `load_model` compiles as saved; task weights are
  saved without optimizer state;
- `MegaHeadTask`: `compile()`'s `"auto"` loss, metrics and optimizer for
  the tasks keras-hub has no defaults for;
- `MegaLabelNamesMixin`: HF's `id2label` / `label2id`.
"""

import inspect

import keras

from keras_mega.layers.functional import check_kwargs
from keras_mega.models.mega_model_mixin import MegaModelMixin
from keras_mega.models.mega_task_utils import check_id2label
from keras_mega.models.mega_task_utils import check_vocabulary
from keras_mega.models.mega_task_utils import is_keras_preset
from keras_mega.models.mega_task_utils import label2id
from keras_mega.models.mega_task_utils import saved_task_config
from keras_mega.models.mega_task_utils import serialize_id2label
from keras_mega.models.mega_task_utils import warn_new_head

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


def _params(fn):
    return set(inspect.signature(fn).parameters)


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
    task_params = _params(task_cls.__init__)
    backbone_params = _params(backbone_cls.__init__)
    backbone_params -= {"self", "args", "kwargs", "name", "trainable"}
    to_backbone = {
        k: v
        for k, v in kwargs.items()
        if k in backbone_params and k not in task_params
    }
    rest = {k: v for k, v in kwargs.items() if k not in to_backbone}
    return to_backbone, rest


def _check_weights_file(filepath):
    if not str(filepath).endswith(".weights.h5"):
        raise ValueError(
            "The filename must end in `.weights.h5`. "
            f"Received: filepath={filepath}"
        )


class MegaTask(MegaModelMixin):
    """What every Mega task adds to its keras-hub class (module docstring).

    A task sets its own arguments as attributes of the same name;
    `get_config` returns them.
    """

    def __init__(self, *args, **kwargs):
        check_vocabulary(self.backbone, self.preprocessor)
        check_task_kwargs(self, kwargs)
        super().__init__(*args, **kwargs)

    def get_config(self):
        config = super().get_config()
        for name in inspect.signature(type(self).__init__).parameters:
            if name in config or name in ("self", "kwargs", "preprocessor"):
                continue
            value = getattr(self, name)
            if name == "activation":
                value = keras.activations.serialize(value)
            elif name == "id2label":
                value = serialize_id2label(value)
            config[name] = value
        return config

    @classmethod
    def _preset_kwargs(cls, preset, kwargs, load_weights=True):
        """`from_preset` kwargs for a Keras preset.

        keras-hub hands a task's `from_preset` kwargs (but `dtype`) to the
        task; options of the backbone (e.g. `chunk_size`) that the task
        does not take build the backbone instead, from the same preset.
        keras-hub also starts a new head whenever `num_classes` is passed;
        a count equal to the saved head's loads the trained head instead,
        and another count warns, naming both. (HF directories:
        `convert.hf_heads.load_task` does the same.)
        """
        kwargs = super()._preset_kwargs(preset, kwargs, load_weights)
        if "backbone" not in kwargs and is_keras_preset(preset):
            to_backbone, rest = backbone_arguments(cls, kwargs)
            if to_backbone:
                rest["backbone"] = cls.backbone_cls.from_preset(
                    preset,
                    load_weights=load_weights,
                    dtype=rest.pop("dtype", None),
                    **to_backbone,
                )
                kwargs = rest
        if "num_classes" not in kwargs or "num_classes" not in (
            _params(cls.__init__)
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
        _check_weights_file(filepath)
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
        _check_weights_file(filepath)
        keras.saving.load_weights(
            self,
            filepath,
            objects_to_skip=self._task_weights_objects_to_skip(),
        )


class MegaHeadTask(MegaTask):
    """`MegaTask` plus the `compile()` of the Mega task heads.

    `"auto"` arguments of `compile()` take the task's defaults: Adam with
    learning rate 5e-5, and the loss and metrics that `_auto_loss()`,
    `_auto_metrics()` and `_auto_weighted_metrics()` give (by default
    sparse categorical cross-entropy, from logits unless the task's
    `activation` is softmax, and sparse categorical accuracy). keras-hub
    compiles a task at the end of `__init__`: a task sets the attributes
    these read before building its model.
    """

    def _from_logits(self, probabilities):
        """Whether outputs are logits: `activation` is not `probabilities`."""
        activation = keras.activations.get(getattr(self, "activation", None))
        return activation != probabilities

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
