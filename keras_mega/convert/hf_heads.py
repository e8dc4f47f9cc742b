"""Hugging Face Mega heads -> keras-mega tasks: the `HEADS` table.

keras-mega's preset loader (`keras_mega.preset_loaders`) calls `load_task`
(through `keras_mega.convert.hf`) for HF directories with
`model_type: "mega"`, so `MegaTextClassifier.from_preset(hf_dir)` (and the
other tasks) builds the task with the head's size from the HF config and
the head's weights from the checkpoint. Each `Head` record of `HEADS` names
an HF head class, its task, and its weights (the `*_map` functions, HF
name -> task layer).

Label counts come from the HF config (`id2label`, else `num_labels`), and
the label names (`id2label`) become the task's `id2label`;
`problem_type: "multi_label_classification"` gives `multi_label=True`, and
one label without it is regression, as in HF. The head dropout is HF's
`classifier_dropout` (else `hidden_dropout_prob`). A `num_classes` passed to
`from_preset` that equals the checkpoint's label count keeps the trained
head; another count starts a new head (the backbone keeps its weights) with
a warning naming both counts. Loading a checkpoint of another head class
(or a bare `MegaModel`) also starts a new head, with a warning (none for a
classifier given `num_classes`: that is fine-tuning); a classifier then
needs `num_classes`.

Other `from_preset` arguments: backbone options the task does not take
itself (`dtype`, `chunk_size`, `normalization_type`, ...) go to the
backbone; the rest go to the task, which refuses names it does not know.
"""

import dataclasses
import warnings

import numpy as np

from keras_mega.convert import hf_checkpoint
from keras_mega.convert.hf_checkpoint import dense_weights
from keras_mega.models.mega_task import backbone_arguments
from keras_mega.models.mega_task_utils import warn_new_head

# --- Task config ---


def _head_dropout(hf_config):
    dropout = hf_config.get("classifier_dropout")
    if dropout is None:
        dropout = hf_config.get("hidden_dropout_prob", 0.1)
    return dropout


def _num_labels(hf_config):
    if hf_config.get("id2label"):
        return len(hf_config["id2label"])
    return hf_config.get("num_labels", 2)


def _lm_kwargs(hf_config):
    return {
        "use_hidden_dense": hf_config.get("add_lm_hidden_dense_layer", True),
        "tie_weights": hf_config.get("tie_word_embeddings", True),
    }


def _classifier_kwargs(hf_config):
    return {"dropout": _head_dropout(hf_config)}


def _multiple_choice_kwargs(hf_config):
    return {"dropout": hf_config.get("hidden_dropout_prob", 0.1)}


def _no_kwargs(hf_config):
    return {}


def _id2label(hf_config):
    """HF's label names as `{int id: name}`.

    A config without them (transformers does not write its default names)
    gets HF's defaults, `LABEL_0`, `LABEL_1`, ..., as `MegaConfig` does.
    """
    id2label = hf_config.get("id2label")
    if not id2label:
        return {i: f"LABEL_{i}" for i in range(_num_labels(hf_config))}
    return {int(k): v for k, v in id2label.items()}


def _text_classifier_labels(hf_config):
    """The trained head's label count, names and problem type."""
    return {
        "num_classes": _num_labels(hf_config),
        "id2label": _id2label(hf_config),
        "multi_label": hf_config.get("problem_type")
        == "multi_label_classification",
    }


def _token_classifier_labels(hf_config):
    return {
        "num_classes": _num_labels(hf_config),
        "id2label": _id2label(hf_config),
    }


# --- Head weights ---


def _lm_head_map(head, hf_name):
    weights = {f"{hf_name}.bias": (head.bias, None)}
    if head.token_embedding is None:
        weights[f"{hf_name}.weight"] = (head.kernel, np.transpose)
    if head.dense is not None:
        weights.update(dense_weights(head.dense, "dense"))
    return weights


def _masked_lm_map(task):
    return _lm_head_map(task.lm_head, "mlm_head")


def _causal_lm_map(task):
    return _lm_head_map(task.lm_head, "lm_head")


def _text_classifier_map(task):
    return {
        **dense_weights(task.pooled_dense, "classifier.dense"),
        **dense_weights(task.output_dense, "classifier.out_proj"),
    }


def _token_classifier_map(task):
    return dense_weights(task.output_dense, "classifier")


def _multiple_choice_map(task):
    return {
        **dense_weights(task.pooler_dense, "mega.pooler.dense"),
        **dense_weights(task.output_dense, "classifier"),
    }


def _question_answerer_map(task):
    return dense_weights(task.span_dense, "qa_outputs")


@dataclasses.dataclass(frozen=True)
class Head:
    """How one HF Mega architecture maps to a keras-mega task.

    Attributes:
        task: the keras-mega task class name (`keras_mega.models.<task>`).
        hf_class: the HF architecture (`config.json`'s `architectures[0]`).
        task_kwargs: HF config dict -> the task's constructor arguments.
        label_kwargs: HF config dict -> the label arguments of a trained
            classifier head (`num_classes`, ...); None for heads without
            labels.
        weight_map: task -> `{hf_name: (keras variable, transform)}` of the
            head's weights.
        hf_prefixes: the HF weight-name prefixes the head owns.
    """

    task: str
    hf_class: str
    task_kwargs: object
    label_kwargs: object
    weight_map: object
    hf_prefixes: tuple


HEADS = (
    Head(
        "MegaMaskedLM", "MegaForMaskedLM", _lm_kwargs, None, _masked_lm_map,
        ("dense.", "mlm_head."),
    ),
    Head(
        "MegaCausalLM", "MegaForCausalLM", _lm_kwargs, None, _causal_lm_map,
        ("dense.", "lm_head."),
    ),
    Head(
        "MegaTextClassifier", "MegaForSequenceClassification",
        _classifier_kwargs, _text_classifier_labels, _text_classifier_map,
        ("classifier.",),
    ),
    Head(
        "MegaTokenClassifier", "MegaForTokenClassification",
        _classifier_kwargs, _token_classifier_labels, _token_classifier_map,
        ("classifier.",),
    ),
    Head(
        "MegaMultipleChoice", "MegaForMultipleChoice",
        _multiple_choice_kwargs, None, _multiple_choice_map,
        ("mega.pooler.", "classifier."),
    ),
    Head(
        "MegaQuestionAnswerer", "MegaForQuestionAnswering", _no_kwargs, None,
        _question_answerer_map, ("qa_outputs.",),
    ),
)  # fmt: skip
# HF architecture -> keras-mega class name, the backbone included (the CLI).
ARCHITECTURES = {
    "MegaModel": "MegaBackbone",
    **{head.hf_class: head.task for head in HEADS},
}


def _head_of(cls):
    by_task = {head.task: head for head in HEADS}
    for klass in cls.__mro__:
        if klass.__name__ in by_task:
            return by_task[klass.__name__]
    return None


def load_task(loader, cls, load_weights, load_task_weights, **kwargs):
    """Builds task `cls` from an HF Mega directory, head included.

    Args:
        loader: keras-hub's preset loader for the directory (`config` is the
            HF config dict; `load_backbone` and `load_preprocessor` work).
        cls: the task class.
        load_weights: bool. Load the checkpoint's weights at all.
        load_task_weights: bool. keras-hub passes False whenever
            `num_classes` is given; for classifiers the label count decides
            instead (equal to the checkpoint's: the trained head).
        **kwargs: task arguments, which override the config's, and backbone
            options (see the module docstring).
    """
    hf_config = loader.config
    architecture = (hf_config.get("architectures") or [None])[0]
    head = _head_of(cls)
    matches = False
    keep_head = load_task_weights
    if head is not None:
        hf_class = head.hf_class
        matches = architecture == hf_class
        kwargs = {**head.task_kwargs(hf_config), **kwargs}
        if head.label_kwargs:
            keep_head = _label_kwargs(
                loader.preset, cls, hf_class, head.label_kwargs(hf_config),
                matches,
                architecture, kwargs,
            )  # fmt: skip
        if hf_class == "MegaForQuestionAnswering" and matches:
            if _num_labels(hf_config) != 2:
                raise ValueError(
                    "An HF MegaForQuestionAnswering head has 2 outputs "
                    "(start, end); this config has "
                    f"num_labels={_num_labels(hf_config)}."
                )

    checkpoint = None
    if "backbone" not in kwargs:
        backbone_kwargs, kwargs = loader.get_backbone_kwargs(**kwargs)
        more, kwargs = backbone_arguments(cls, kwargs)
        backbone = loader.load_backbone(
            cls.backbone_cls, False, **backbone_kwargs, **more
        )
        if load_weights:
            checkpoint = hf_checkpoint.read_checkpoint(loader.preset)
            loader.converter.convert_weights(backbone, checkpoint, hf_config)
        kwargs["backbone"] = backbone
    if "preprocessor" not in kwargs and cls.preprocessor_cls:
        kwargs["preprocessor"] = loader.load_preprocessor(cls.preprocessor_cls)
    task = cls(**kwargs)

    if head is None or not (load_weights and keep_head):
        return task
    if not matches:
        warnings.warn(
            f"{loader.preset} holds a {architecture}, not a {hf_class}: the "
            f"{cls.__name__} head starts from random weights.",
            stacklevel=2,
        )
        return task
    if checkpoint is None:
        checkpoint = hf_checkpoint.read_checkpoint(loader.preset)
    convert_head(task, checkpoint, hf_config)
    return task


def convert_head(task, checkpoint, transformers_config=None):
    """Assigns the head weights of `task` from `checkpoint` (HF name ->
    array), which holds the head of the task's HF class (`HEADS`)."""
    head = _head_of(type(task))
    hf_checkpoint.load_weights(
        head.weight_map(task),
        checkpoint,
        owned_prefixes=head.hf_prefixes,
        ignored=_tied_copies(task),
    )


def _label_kwargs(preset, cls, hf_class, labels, matches, architecture, kwargs):
    """Fills a classifier's label arguments in `kwargs` (in place).

    Returns whether the checkpoint's head weights are to be loaded: the
    head is the checkpoint's (`matches`) and `num_classes` is not given or
    equals its label count. Another count warns and starts a new head,
    keeping the checkpoint's problem type but not its label names.
    """
    requested = kwargs.get("num_classes")
    if not matches:
        if requested is None:
            raise ValueError(
                f"{preset} holds a {architecture}, not a {hf_class}: its "
                "config does not give the label count. Pass "
                f"num_classes=... to {cls.__name__}.from_preset()."
            )
        return False  # A new head on a pretrained backbone: fine-tuning.
    trained = labels["num_classes"]
    if requested is None or requested == trained:
        kwargs["num_classes"] = trained
        for key, value in labels.items():
            kwargs.setdefault(key, value)
        return True
    warn_new_head(preset, cls.__name__, trained, requested, stacklevel=7)
    if "multi_label" in labels:
        kwargs.setdefault("multi_label", labels["multi_label"])
    return False


def _tied_copies(task):
    """LM head weights that HF ties to (so stores as) the token embedding.

    `pytorch_model.bin` files keep such a copy; safetensors files drop it.
    """
    head = getattr(task, "lm_head", None)
    if head is not None and head.token_embedding is not None:
        return ("mlm_head.weight", "lm_head.weight")
    return ()
