"""Mega's language modeling head (HF `MegaForMaskedLM`/`MegaForCausalLM`)."""

import keras
from keras import ops

from keras_mega.layers.functional import flat_matmul
from keras_mega.layers.mega_sublayer import FlatDense
from keras_mega.models.mega_task_utils import kernel_initializer


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaLMHead(keras.layers.Layer):
    """Hidden states to vocabulary logits, optionally at given positions.

    As HF's Mega LM heads: an optional `dense` + tanh layer (HF
    `add_lm_hidden_dense_layer`, on by default), then a projection to the
    vocabulary with a bias. The projection is the transposed token
    embedding when `token_embedding` is given (HF ties them by default,
    `tie_word_embeddings=True`), else its own `kernel`.

    Args:
        vocabulary_size: int. Number of output logits.
        hidden_dim: int. Width of the hidden states.
        use_hidden_dense: bool. Apply `dense` + tanh first.
        token_embedding: a `keras.layers.Embedding` to tie the output
            projection to, or `None` for an untied `kernel`.
        kernel_initializer: initializer of the dense kernels.

    Call arguments:
        inputs: `[batch, length, hidden]` hidden states.
        positions: optional `[batch, num_positions]` ints: compute logits
            only at these positions (masked language modeling).
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        use_hidden_dense=True,
        token_embedding=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.use_hidden_dense = use_hidden_dense
        self.token_embedding = token_embedding
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = None
        if use_hidden_dense:
            self.dense = FlatDense(
                hidden_dim,
                activation="tanh",
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name="dense",
            )

    @classmethod
    def for_backbone(cls, backbone, use_hidden_dense, tie_weights, name):
        """HF's LM head on `backbone`, tied to its token embedding or not."""
        return cls(
            vocabulary_size=backbone.vocabulary_size,
            hidden_dim=backbone.hidden_dim,
            use_hidden_dense=use_hidden_dense,
            token_embedding=backbone.token_embedding if tie_weights else None,
            kernel_initializer=kernel_initializer(backbone),
            dtype=backbone.dtype_policy,
            name=name,
        )

    def build(self, inputs_shape, positions_shape=None):
        hidden_dim = self.hidden_dim
        if self.dense is not None:
            self.dense.build((None, hidden_dim))
        if self.token_embedding is None:
            self.kernel = self.add_weight(
                shape=(hidden_dim, self.vocabulary_size),
                initializer=self.kernel_initializer,
                name="kernel",
            )
        self.bias = self.add_weight(
            shape=(self.vocabulary_size,), initializer="zeros", name="bias"
        )
        self.built = True

    def call(self, inputs, positions=None):
        x = inputs
        if positions is not None:
            positions = ops.cast(positions, "int32")
            x = ops.take_along_axis(x, positions[:, :, None], axis=1)
        if self.dense is not None:
            x = self.dense(x)
        if self.token_embedding is None:
            kernel = ops.cast(self.kernel, x.dtype)
        else:
            kernel = ops.transpose(self._embedding_table(x.dtype))
        return flat_matmul(x, kernel) + ops.cast(self.bias, x.dtype)

    def _embedding_table(self, dtype):
        """The tied token embedding's table in `dtype`, dequantized when
        the embedding is int8 (its `embeddings` are then int8 codes,
        `embeddings_scale` their per-row scales)."""
        embedding = self.token_embedding
        table = ops.cast(embedding.embeddings, dtype)
        mode = embedding.quantization_mode
        if mode == "int8":
            scale = ops.cast(embedding.embeddings_scale, dtype)
            return table / scale[:, None]
        if mode is not None:
            raise ValueError(
                f"A tied LM head cannot read a {mode!r}-quantized token "
                "embedding; quantize with 'int8' (or untie the head)."
            )
        return table

    def compute_output_shape(self, inputs_shape, positions_shape=None):
        if positions_shape is not None:
            return (inputs_shape[0], positions_shape[1], self.vocabulary_size)
        return (*inputs_shape[:-1], self.vocabulary_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "use_hidden_dense": self.use_hidden_dense,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
