"""What the Mega task models share: inputs, head layers, checks, `compile`."""

import keras

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


class MegaTaskMixin(MegaModelMixin):
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


class MegaLMTaskMixin(MegaModelMixin):
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
