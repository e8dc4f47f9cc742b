"""Helpers shared by the Mega task models."""

import keras


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
    backbone_inputs = dict(inputs)
    if "segment_ids" in backbone.input:
        backbone_inputs["segment_ids"] = keras.ops.zeros_like(
            inputs["token_ids"]
        )
    return inputs, backbone_inputs


def kernel_initializer(backbone):
    """HF's initialization of the head weights: N(0, initializer_range)."""
    stddev = getattr(backbone, "initializer_range", 0.02)
    return keras.initializers.RandomNormal(stddev=stddev)


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
