"""The Mega backbone: embeddings and a stack of `MegaBlock`s."""

import contextlib
import warnings

import keras
import numpy as np
from keras_hub.models import Backbone

from keras_mega.backend import nested_remat_saves_memory
from keras_mega.backend import remat_problem
from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_kwargs
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.layer_options import LayerOptions
from keras_mega.layers.mega_block import REMAT_LAYERS
from keras_mega.layers.mega_block import MegaBlock
from keras_mega.layers.mega_documents import check_document_inputs
from keras_mega.models.mega_backbone_forwards import MegaBackboneForwards
from keras_mega.models.mega_backbone_hooks import MegaBackboneHooks
from keras_mega.models.mega_model_mixin import MegaModelMixin


def _embedding_initializer(stddev, pad_token_id):
    """Normal init with the padding row zeroed, as HF initializes it."""

    def initialize(shape, dtype=None):
        values = np.random.normal(0.0, stddev, size=shape)
        if pad_token_id is not None and 0 <= pad_token_id < shape[0]:
            values[pad_token_id] = 0.0
        return keras.ops.convert_to_tensor(values, dtype=dtype)

    return initialize


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaBackbone(
    LayerOptions,
    MegaModelMixin,
    MegaBackboneForwards,
    MegaBackboneHooks,
    Backbone,
):
    """Mega (Moving Average Equipped Gated Attention) backbone.

    Token embeddings (no positional embedding: the EMA and the relative bias
    carry position), optional segment embeddings, then `num_layers`
    `MegaBlock`s; no final norm, as in the paper and HF's `MegaModel`.
    Bidirectional by default (an encoder); `causal=True` makes a decoder
    (causal attention and a past-only EMA). With `chunk_size`, attention runs
    in independent chunks (Mega-chunk) and any sequence length works.

    Inputs are a dict: `token_ids` and `padding_mask` (`[B, L]`, 1 = real
    token), plus `segment_ids` when `num_segments > 0`, plus
    `document_ids` (`[B, L]`) when `document_packing=True`, plus
    `encoder_sequence_output` (`[B, Le, hidden_dim]`) and
    `encoder_padding_mask` when `cross_attention=True`. The output is the
    sequence output `[B, L, hidden_dim]`.

    Names of HF's `MegaConfig` options, and what they are here:

    | HF `MegaConfig` | `MegaBackbone` |
    |---|---|
    | `vocab_size` | `vocabulary_size` |
    | `hidden_size` | `hidden_dim` |
    | `num_hidden_layers` | `num_layers` |
    | `intermediate_size` | `intermediate_dim` |
    | `shared_representation_size` | `shared_dim` |
    | `ema_projection_size` | `ema_dim` |
    | `nffn_hidden_size` | `ffn_dim` |
    | `bidirectional` | `bidirectional` |
    | `is_decoder` | `causal` |
    | `use_chunking`, `chunk_size` | `chunk_size` (None: off) |
    | `truncation` | `truncation` |
    | `attention_activation` | `attention_activation` |
    | `relative_positional_bias` | `relative_position_bias` |
    | `max_positions` | `max_sequence_length` |
    | `normalization_type` | `normalization_type` ("rmsnorm" is a real
      RMSNorm here; HF's is "hf_rmsnorm") |
    | `norm_affine` | `norm_affine` |
    | `normalize_before_mega` | `normalize_before_attention` |
    | `normalize_before_ffn` | `normalize_before_ffn` |
    | `use_normalized_ffn` | `use_normalized_ffn` |
    | `activation` | `activation` |
    | `dropout_prob` | `dropout` |
    | `hidden_dropout_prob` | `hidden_dropout` |
    | `attention_probs_dropout_prob` | `attention_dropout` |
    | `nffn_activation_dropout_prob` | `ffn_activation_dropout` |
    | `use_feature_dropout` | `feature_dropout` |
    | `add_token_type_embeddings`, `type_vocab_size` | `num_segments` (0: off) |
    | `add_cross_attention` | `cross_attention` |
    | `initializer_range`, `ema_*_range` | same names |
    | (none) | `ema_init`, `ema_max_timescale` (opt-in init) |
    | `pad_token_id`, `bos_token_id`, `eos_token_id` | same names |

    Args:
        vocabulary_size: int. Size of the token vocabulary.
        num_layers: int. Number of Mega blocks.
        hidden_dim: int. Model width.
        intermediate_dim: int. Width of the attention values.
        shared_dim: int. Width of the shared query/key representation.
        ema_dim: int. EMA dimensions per channel.
        ffn_dim: int. Hidden width of the normalized FFN. Defaults to
            `intermediate_dim`.
        bidirectional: bool. Bidirectional EMA (encoder). Defaults to
            `not causal`: an encoder's EMA looks both ways, a decoder's only
            into the past. `causal=True, bidirectional=True` (which HF
            allows: `is_decoder` with its default `bidirectional=True`)
            must be asked for explicitly: its EMA reads future tokens, so it
            is no language model (`MegaCausalLM` refuses it).
        causal: bool. Causal attention (decoder).
        chunk_size: int or None. Chunked attention.
        truncation: int or None. EMA kernel truncation.
        attention_activation: "softmax", "laplace" or "relu2".
        relative_position_bias: "rotary" or "simple".
        max_sequence_length: int. Range of the simple relative bias.
        normalization_type: "scalenorm", "layernorm", "rmsnorm", "batchnorm",
            "syncbatchnorm" or "hf_rmsnorm".
        norm_affine: bool. Learned norm scales.
        normalize_before_attention: bool. Pre-norm attention sublayers.
        normalize_before_ffn: bool. Pre-norm FFN.
        use_normalized_ffn: bool. Add the FFN to each block.
        activation: str. Activation function.
        dropout, hidden_dropout, attention_dropout, ffn_activation_dropout:
            float. Dropout rates.
        feature_dropout: bool. Drop whole channels.
        num_segments: int. Segment (token type) vocabulary; 0 for none.
        cross_attention: bool. Decoder blocks attend to an encoder output.
        initializer_range, ema_delta_alpha_range, ema_beta_range,
            ema_gamma_omega_range: float. Initialization.
        ema_init: "paper" (default) or "timescales": an opt-in EMA init whose
            slow dimensions carry information across attention chunks (see
            `keras_mega.layers.ema_initializers`).
        ema_max_timescale: float. Slowest EMA timescale of "timescales".
        document_packing: bool. Rows hold packed documents: the backbone
            takes a `document_ids` input (int `[B, L]`; each maximal run of
            equal ids is one document) and nothing crosses a document
            boundary: the EMA restarts there (both directions when
            bidirectional) and attention, full or chunked, stays inside the
            document, chunks counted from the document's start. Each
            token's output is that of its document run alone (BatchNorm
            in training mode excepted: its statistics span the batch).
            The sequence length must be static. Not with cross attention.
        remat: bool. Rematerialize each block in training: its activations
            are recomputed in the backward pass instead of kept (Keras'
            `RematScope("list_of_layers")` over the blocks; the same as
            building the backbone under that scope yourself). On JAX also
            nested inside each block, over its gated attention, EMA,
            attention, cross attention and FFN (`REMAT_LAYERS`); on
            TensorFlow and torch that saved 2% more and took 1.2-1.5x the
            time (`backend.nested_remat_saves_memory`): add `REMAT_LAYERS`
            to your own scope's names for it there. Memory for compute;
            the outputs and gradients are the same.
        pad_token_id, bos_token_id, eos_token_id: int. Special ids; the
            padding row of the embedding starts at zero.
        dtype: The dtype policy of the layers.

    Examples:
    ```python
    # An HF Mega checkpoint directory (any HF Mega head class).
    backbone = keras_mega.models.MegaBackbone.from_preset("path/to/hf_mega")

    # A randomly initialized chunked encoder.
    backbone = keras_mega.models.MegaBackbone(
        vocabulary_size=1000, num_layers=2, hidden_dim=64,
        intermediate_dim=128, shared_dim=32, ema_dim=8, chunk_size=32,
    )
    outputs = backbone({
        "token_ids": np.ones((2, 100), "int32"),
        "padding_mask": np.ones((2, 100), "int32"),
    })
    ```
    """

    OPTIONS = {
        **MegaBlock.OPTIONS,
        # The backbone's own defaults (a block's are for a layer alone).
        "bidirectional": None,  # not causal
        "dropout": 0.1,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "ffn_activation_dropout": 0.1,
        "num_segments": 0,
        "document_packing": False,
        "remat": False,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        hidden_dim,
        intermediate_dim,
        *,
        dtype=None,
        **kwargs,
    ):
        self.set_options(self.pop_options(kwargs))
        check_kwargs(type(self), kwargs)
        self.vocabulary_size, self.num_layers = vocabulary_size, num_layers
        self.hidden_dim, self.intermediate_dim = hidden_dim, intermediate_dim
        if self.bidirectional is None:
            self.bidirectional = not self.causal
        if self.cross_attention and not self.causal:
            raise ValueError(
                "cross_attention=True is for decoders: set causal=True "
                "(HF: add_cross_attention needs is_decoder)."
            )
        self.chunk_size = check_positive_or_none("chunk_size", self.chunk_size)
        self.ffn_dim = self.ffn_dim or intermediate_dim
        for name in ("document_packing", "remat"):
            value = check_choice(name, getattr(self, name), (True, False))
            setattr(self, name, bool(value))
        if self.document_packing and self.cross_attention:
            raise ValueError(
                "document_packing=True cannot be combined with "
                "cross_attention=True: every packed document would need its "
                "own encoder output. Pack decoder-only models, or give each "
                "row one document."
            )

        # === Layers ===
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=_embedding_initializer(
                self.initializer_range, self.pad_token_id
            ),
            dtype=dtype,
            name="token_embedding",
        )
        self.segment_embedding = None
        if self.num_segments:
            self.segment_embedding = keras.layers.Embedding(
                self.num_segments,
                hidden_dim,
                embeddings_initializer=keras.initializers.RandomNormal(
                    stddev=self.initializer_range
                ),
                dtype=dtype,
                name="segment_embedding",
            )
        names = [f"mega_layer_{i}" for i in range(num_layers)]
        # Keras decides remat when a layer is created, not when it is called.
        remat_scope = contextlib.nullcontext()
        if self.remat:
            nested = list(REMAT_LAYERS) if nested_remat_saves_memory() else []
            remat_scope = keras.RematScope(
                "list_of_layers", layer_names=names + nested
            )
            problem = remat_problem()
            if problem:
                warnings.warn(problem, stacklevel=2)
        with remat_scope:
            self.mega_layers = [
                MegaBlock(
                    hidden_dim,
                    intermediate_dim,
                    **self.options_for(MegaBlock),
                    dtype=dtype,
                    name=name,
                )
                for name in names
            ]

        # === Functional Model ===
        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("token_ids", "padding_mask")
            + ("segment_ids",) * bool(self.num_segments)
            + ("document_ids",) * self.document_packing
        }
        if self.cross_attention:
            inputs["encoder_sequence_output"] = keras.Input(
                shape=(None, hidden_dim), name="encoder_sequence_output"
            )
            inputs["encoder_padding_mask"] = keras.Input(
                shape=(None,), dtype="int32", name="encoder_padding_mask"
            )
        x = self.embed(inputs["token_ids"], inputs.get("segment_ids"))
        hidden_states, _, _ = self._blocks(x, inputs)
        super().__init__(
            inputs=inputs, outputs=hidden_states[-1], dtype=dtype, **kwargs
        )

    def _blocks(self, x, inputs):
        """The blocks over the embeddings `x`: `(hidden_states, attentions,
        cross_attentions)`, lists as `feature_extractor` returns them."""
        hidden_states, attentions, cross_attentions = [x], [], []
        for block in self.mega_layers:
            # Every call of a block returns its attention weights too, so
            # that `feature_extractor()` can reuse the blocks (Keras wants
            # one output structure per layer).
            x, weights, *cross = block(
                x,
                padding_mask=inputs["padding_mask"],
                encoder_sequence_output=inputs.get("encoder_sequence_output"),
                encoder_padding_mask=inputs.get("encoder_padding_mask"),
                return_attention_scores=True,
                document_ids=inputs.get("document_ids"),
            )
            hidden_states.append(x)
            attentions.append(weights)
            cross_attentions.extend(cross)
        return hidden_states, attentions, cross_attentions

    def embed(self, token_ids, segment_ids=None, inputs_embeds=None):
        """Token (plus segment) embeddings, `[B, L, hidden_dim]`;
        `inputs_embeds` stand in for the token embeddings if given."""
        x = inputs_embeds
        if x is None:
            x = self.token_embedding(token_ids)
        if self.segment_embedding is not None:
            if segment_ids is None:
                segment_ids = keras.ops.zeros_like(token_ids)
            x = x + self.segment_embedding(segment_ids)
        return x

    def _check_inputs(self, x):
        super()._check_inputs(x)
        if isinstance(x, dict):
            packing = getattr(self, "document_packing", False)
            check_document_inputs(x, packing)
