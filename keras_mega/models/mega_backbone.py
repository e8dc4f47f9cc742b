"""The Mega backbone: embeddings and a stack of `MegaBlock`s."""

import contextlib

import keras
import numpy as np
from keras_hub.models import Backbone

from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_kwargs
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.mega_block import MegaBlock
from keras_mega.layers.mega_documents import check_document_ids
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
class MegaBackbone(MegaModelMixin, Backbone):
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
            building the backbone under that scope yourself). Memory for
            compute; the outputs and gradients are the same.
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

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        hidden_dim,
        intermediate_dim,
        shared_dim=64,
        ema_dim=16,
        ffn_dim=None,
        bidirectional=None,
        causal=False,
        chunk_size=None,
        truncation=None,
        attention_activation="softmax",
        relative_position_bias="rotary",
        max_sequence_length=2048,
        normalization_type="scalenorm",
        norm_affine=True,
        normalize_before_attention=True,
        normalize_before_ffn=True,
        use_normalized_ffn=True,
        activation="silu",
        dropout=0.1,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        ffn_activation_dropout=0.1,
        feature_dropout=False,
        num_segments=0,
        cross_attention=False,
        initializer_range=0.02,
        ema_delta_alpha_range=0.2,
        ema_beta_range=0.02,
        ema_gamma_omega_range=1.0,
        ema_init="paper",
        ema_max_timescale=1024.0,
        document_packing=False,
        remat=False,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        dtype=None,
        **kwargs,
    ):
        check_kwargs(type(self), kwargs)
        if bidirectional is None:
            bidirectional = not causal
        if cross_attention and not causal:
            raise ValueError(
                "cross_attention=True is for decoders: set causal=True "
                "(HF: add_cross_attention needs is_decoder)."
            )
        chunk_size = check_positive_or_none("chunk_size", chunk_size)
        ffn_dim = ffn_dim or intermediate_dim
        document_packing = bool(
            check_choice("document_packing", document_packing, (True, False))
        )
        remat = bool(check_choice("remat", remat, (True, False)))
        if document_packing and cross_attention:
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
                initializer_range, pad_token_id
            ),
            dtype=dtype,
            name="token_embedding",
        )
        self.segment_embedding = None
        if num_segments:
            self.segment_embedding = keras.layers.Embedding(
                num_segments,
                hidden_dim,
                embeddings_initializer=keras.initializers.RandomNormal(
                    stddev=initializer_range
                ),
                dtype=dtype,
                name="segment_embedding",
            )
        # Keras decides remat when a layer is created, not when it is called.
        remat_scope = contextlib.nullcontext()
        if remat:
            remat_scope = keras.RematScope(
                "list_of_layers",
                layer_names=[f"mega_layer_{i}" for i in range(num_layers)],
            )
        with remat_scope:
            self.mega_layers = [
                MegaBlock(
                    hidden_dim,
                    intermediate_dim,
                    shared_dim=shared_dim,
                    ema_dim=ema_dim,
                    bidirectional=bidirectional,
                    causal=causal,
                    chunk_size=chunk_size,
                    truncation=truncation,
                    attention_activation=attention_activation,
                    relative_position_bias=relative_position_bias,
                    max_sequence_length=max_sequence_length,
                    normalization_type=normalization_type,
                    norm_affine=norm_affine,
                    normalize_before_attention=normalize_before_attention,
                    activation=activation,
                    dropout=dropout,
                    hidden_dropout=hidden_dropout,
                    attention_dropout=attention_dropout,
                    feature_dropout=feature_dropout,
                    use_normalized_ffn=use_normalized_ffn,
                    ffn_dim=ffn_dim,
                    normalize_before_ffn=normalize_before_ffn,
                    ffn_activation_dropout=ffn_activation_dropout,
                    cross_attention=cross_attention,
                    initializer_range=initializer_range,
                    ema_delta_alpha_range=ema_delta_alpha_range,
                    ema_beta_range=ema_beta_range,
                    ema_gamma_omega_range=ema_gamma_omega_range,
                    ema_init=ema_init,
                    ema_max_timescale=ema_max_timescale,
                    dtype=dtype,
                    name=f"mega_layer_{i}",
                )
                for i in range(num_layers)
            ]

        # === Functional Model ===
        inputs = {
            "token_ids": keras.Input(
                shape=(None,), dtype="int32", name="token_ids"
            ),
            "padding_mask": keras.Input(
                shape=(None,), dtype="int32", name="padding_mask"
            ),
        }
        if num_segments:
            inputs["segment_ids"] = keras.Input(
                shape=(None,), dtype="int32", name="segment_ids"
            )
        if document_packing:
            inputs["document_ids"] = keras.Input(
                shape=(None,), dtype="int32", name="document_ids"
            )
        if cross_attention:
            inputs["encoder_sequence_output"] = keras.Input(
                shape=(None, hidden_dim), name="encoder_sequence_output"
            )
            inputs["encoder_padding_mask"] = keras.Input(
                shape=(None,), dtype="int32", name="encoder_padding_mask"
            )
        x = self.token_embedding(inputs["token_ids"])
        if num_segments:
            x = x + self.segment_embedding(inputs["segment_ids"])
        for block in self.mega_layers:
            # Every call of a block returns its attention weights too, so
            # that `feature_extractor()` can reuse the blocks (Keras wants
            # one output structure per layer).
            x, *_ = block(
                x,
                padding_mask=inputs["padding_mask"],
                encoder_sequence_output=inputs.get("encoder_sequence_output"),
                encoder_padding_mask=inputs.get("encoder_padding_mask"),
                return_attention_scores=True,
                document_ids=inputs.get("document_ids"),
            )
        super().__init__(inputs=inputs, outputs=x, dtype=dtype, **kwargs)

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.shared_dim = shared_dim
        self.ema_dim = ema_dim
        self.ffn_dim = ffn_dim
        self.bidirectional = bidirectional
        self.causal = causal
        self.chunk_size = chunk_size
        self.truncation = truncation
        self.attention_activation = attention_activation
        self.relative_position_bias = relative_position_bias
        self.max_sequence_length = max_sequence_length
        self.normalization_type = normalization_type
        self.norm_affine = norm_affine
        self.normalize_before_attention = normalize_before_attention
        self.normalize_before_ffn = normalize_before_ffn
        self.use_normalized_ffn = use_normalized_ffn
        self.activation = activation
        self.dropout = dropout
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.ffn_activation_dropout = ffn_activation_dropout
        self.feature_dropout = feature_dropout
        self.num_segments = num_segments
        self.cross_attention = cross_attention
        self.initializer_range = initializer_range
        self.ema_delta_alpha_range = ema_delta_alpha_range
        self.ema_beta_range = ema_beta_range
        self.ema_gamma_omega_range = ema_gamma_omega_range
        self.ema_init = ema_init
        self.ema_max_timescale = ema_max_timescale
        self.document_packing = document_packing
        self.remat = remat
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id

    # --- Per-layer outputs, attention maps, embeddings input ---

    def feature_extractor(
        self,
        output_hidden_states=True,
        output_attentions=False,
        inputs_embeds=False,
    ):
        """A functional model over this backbone's layers (shared weights).

        The Keras counterpart of HF's `output_hidden_states`,
        `output_attentions` and `inputs_embeds`. The returned model shares
        every weight with the backbone: train either, both change.

        Args:
            output_hidden_states: bool. Add `"hidden_states"`: the embedding
                output followed by each layer's output (`num_layers + 1`
                tensors `[B, L, hidden_dim]`, as HF orders them).
            output_attentions: bool. Add `"attentions"`: each layer's
                attention weights `[B, chunks, chunk, chunk]` (one chunk of
                `L` without chunking; with chunking, the last chunk includes
                the padding added to reach a chunk multiple), and with cross
                attention `"cross_attentions"` `[B, L, L_encoder]`.
            inputs_embeds: bool. Take `"inputs_embeds"` `[B, L, hidden_dim]`
                (e.g. projected pixels or audio frames) instead of
                `"token_ids"`; segment embeddings are still added.

        Returns:
            A `keras.Model` whose output is a dict with `"sequence_output"`
            and the requested entries.

        Example:
        ```python
        features = backbone.feature_extractor(output_attentions=True)
        out = features({"token_ids": ids, "padding_mask": mask})
        out["hidden_states"][0]  # embeddings; out["attentions"][i]: layer i
        ```
        """
        inputs = {
            name: keras.Input(
                shape=tensor.shape[1:], dtype=tensor.dtype, name=name
            )
            for name, tensor in self.input.items()
            if not (inputs_embeds and name == "token_ids")
        }
        if inputs_embeds:
            inputs["inputs_embeds"] = keras.Input(
                shape=(None, self.hidden_dim), name="inputs_embeds"
            )
            x = inputs["inputs_embeds"]
            if self.segment_embedding is not None:
                x = x + self.segment_embedding(inputs["segment_ids"])
        else:
            x = self.embed(inputs["token_ids"], inputs.get("segment_ids"))
        hidden_states, attentions, cross_attentions = [x], [], []
        encoder = inputs.get("encoder_sequence_output")
        encoder_mask = inputs.get("encoder_padding_mask")
        for block in self.mega_layers:
            x, weights, *cross = block(
                x,
                padding_mask=inputs["padding_mask"],
                encoder_sequence_output=encoder,
                encoder_padding_mask=encoder_mask,
                return_attention_scores=True,
                document_ids=inputs.get("document_ids"),
            )
            attentions.append(weights)
            cross_attentions.extend(cross)
            hidden_states.append(x)
        outputs = {"sequence_output": x}
        if output_hidden_states:
            outputs["hidden_states"] = hidden_states
        if output_attentions:
            outputs["attentions"] = attentions
            if cross_attentions:
                outputs["cross_attentions"] = cross_attentions
        return keras.Model(inputs, outputs, name=f"{self.name}_features")

    # --- Decoding with a cache (used by MegaCausalLM) ---

    def embed(self, token_ids, segment_ids=None):
        """Token (plus segment) embeddings, `[B, L, hidden_dim]`."""
        x = self.token_embedding(token_ids)
        if self.segment_embedding is not None:
            if segment_ids is None:
                segment_ids = keras.ops.zeros_like(token_ids)
            x = x + self.segment_embedding(segment_ids)
        return x

    def prefill(self, inputs, position, max_length=None):
        """The full forward and a decoding cache ready for `position`.

        Args:
            inputs: the backbone's input dict.
            position: int or scalar int tensor: the first position that
                `call_with_cache` will be fed. Tokens at and after it are
                left out of the cache (their outputs are still computed).
            max_length: int. Longest sequence the cache must serve without
                chunking (default: the input length).

        Returns:
            `(sequence_output [B, L, hidden_dim], cache)`: a tuple with one
            `(ema_state, keys, values)` entry per layer. With chunking its
            size is independent of the sequence length. With
            `document_packing` each entry has two more parts (see
            `MegaGatedAttention.empty_cache`), and `inputs` may hold
            `document_ids`; without them each row is one document (as for
            `generate()`, whose prompts are single documents).
        """
        document_ids = self._document_ids(
            inputs.get("document_ids"), inputs["token_ids"]
        )
        x = self.embed(inputs["token_ids"], inputs.get("segment_ids"))
        caches = []
        for block in self.mega_layers:
            x, cache = block.prefill(
                x,
                padding_mask=inputs["padding_mask"],
                position=position,
                max_length=max_length,
                encoder_sequence_output=inputs.get("encoder_sequence_output"),
                encoder_padding_mask=inputs.get("encoder_padding_mask"),
                document_ids=document_ids,
            )
            caches.append(cache)
        return x, tuple(caches)

    def empty_cache(self, batch_size, max_length):
        """A cache for decoding from position 0 (streaming from scratch)."""
        return tuple(
            block.mega_layer.empty_cache(
                batch_size, max_length, document_packing=self.document_packing
            )
            for block in self.mega_layers
        )

    def call_with_cache(
        self,
        token_ids,
        cache,
        position,
        segment_ids=None,
        encoder_sequence_output=None,
        encoder_padding_mask=None,
        document_ids=None,
    ):
        """Feeds a block of tokens `[B, T]` at `position`.

        Returns `(sequence_output [B, T, hidden_dim], new_cache)`, equal to
        the full forward at these positions. Blocks may have any length and
        cross chunk boundaries, e.g. to score a long document as a stream.
        With `document_packing`, `document_ids` `[B, T]` gives the new
        tokens' documents: a token whose id differs from the previous
        token's starts a new document (the EMA restarts, earlier keys are
        masked). `None` continues each row's last document.
        """
        if document_ids is not None:
            self._document_ids(document_ids, token_ids)
        x = self.embed(token_ids, segment_ids)
        caches = []
        for block, layer_cache in zip(self.mega_layers, cache):
            x, layer_cache = block.call_with_cache(
                x,
                layer_cache,
                position,
                encoder_sequence_output=encoder_sequence_output,
                encoder_padding_mask=encoder_padding_mask,
                document_ids=document_ids,
            )
            caches.append(layer_cache)
        return x, tuple(caches)

    # --- Packed documents ---

    def _document_ids(self, document_ids, token_ids):
        """Checked `document_ids` for `prefill`/`call_with_cache`."""
        if not self.document_packing:
            if document_ids is not None:
                raise ValueError(self._unexpected_document_ids())
            return None
        if document_ids is None:
            return keras.ops.zeros_like(token_ids, dtype="int32")
        return check_document_ids(document_ids, token_ids)

    def _unexpected_document_ids(self):
        return (
            "Got `document_ids`, but this MegaBackbone was built without "
            "document_packing=True, so it would attend across documents. "
            "Build it with MegaBackbone(..., document_packing=True), or "
            "drop `document_ids`."
        )

    def _check_inputs(self, x):
        super()._check_inputs(x)
        if not isinstance(x, dict):
            return
        packing = getattr(self, "document_packing", False)
        if "document_ids" in x and not packing:
            raise ValueError(self._unexpected_document_ids())
        if packing:
            if x.get("document_ids") is None:
                raise ValueError(
                    "This MegaBackbone has document_packing=True: its inputs "
                    "need `document_ids` (int [batch, length], one id per "
                    "token, each maximal run of equal ids one document). For "
                    "unpacked rows pass zeros, e.g. "
                    "np.zeros_like(token_ids)."
                )
            check_document_ids(x["document_ids"], x.get("token_ids"))

    # --- keras-hub hooks: LoRA, GPTQ/AWQ ---

    @property
    def transformer_layers(self):
        """The blocks, under the name keras-hub's GPTQ/AWQ paths look for."""
        return self.mega_layers

    def default_lora_layer_names(self):
        """The projections `enable_lora` adapts by default (those present):
        each block's attention value `v_proj`, gate `mx_proj` (gates,
        queries/keys and the output candidate) and output `h_proj`
        projections (cross attention's `v_proj`/`h_proj` too), and the
        FFN's `fc1`/`fc2`."""
        present = {layer.name for layer in self._flatten_layers()}
        return [name for name in LORA_LAYER_NAMES if name in present]

    def enable_lora(self, rank, target_layer_names=None):
        """Freezes the backbone and adds rank-`rank` LoRA adapters.

        keras-hub's `Backbone.enable_lora`, strict: a target name that
        matches no layer with weights, or a layer that cannot take LoRA,
        is an error instead of a frozen, untrainable backbone. A task's
        head stays trainable. The adapters start at zero: the outputs do
        not change until they train.

        Args:
            rank: int. Rank of the adapters.
            target_layer_names: list of layer names; defaults to
                `default_lora_layer_names()`.

        Example:
        ```python
        classifier.backbone.enable_lora(4)
        classifier.fit(...)  # trains the adapters and the head
        classifier.backbone.save_lora_weights("adapters.lora.h5")
        ```
        """
        if target_layer_names is None:
            target_layer_names = self.default_lora_layer_names()
        target_layer_names = list(target_layer_names)
        layers = {
            layer.name: layer
            for layer in self._flatten_layers(include_self=False)
            if layer.weights
        }
        missing = [name for name in target_layer_names if name not in layers]
        unsupported = [
            name
            for name in target_layer_names
            if name in layers and not hasattr(layers[name], "enable_lora")
        ]
        if missing or unsupported or not target_layer_names:
            raise ValueError(
                "enable_lora: "
                + (f"no layer named {missing}. " if missing else "")
                + (f"{unsupported} cannot take LoRA. " if unsupported else "")
                + ("no target layers. " if not target_layer_names else "")
                + "Layers that can: "
                + ", ".join(
                    sorted(
                        name
                        for name, layer in layers.items()
                        if hasattr(layer, "enable_lora")
                    )
                )
                + "."
            )
        super().enable_lora(rank, target_layer_names=target_layer_names)

    @staticmethod
    def get_layout_map(
        device_mesh,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """A `keras.distribution.LayoutMap` for model parallelism.

        Megatron-style sharding, as keras-hub's backbones do it: the token
        embedding and the input projections of each sublayer (`v_proj`,
        `mx_proj`, `fc1`, cross attention's `q_proj`/`k_proj`) are split
        along their output units on the model axis, the output projections
        (`h_proj`, `fc2`) along their input units. The EMA parameters,
        norms and biases (small) are replicated.

        Args:
            device_mesh: `keras.distribution.DeviceMesh`.
            model_parallel_dim_name: mesh axis the weights are split on.
            data_parallel_dim_name: mesh axis the batch is split on.

        Example:
        ```python
        mesh = keras.distribution.DeviceMesh(
            (2, 4), ["batch", "model"], keras.distribution.list_devices()
        )
        distribution = keras.distribution.ModelParallel(
            layout_map=MegaBackbone.get_layout_map(mesh),
            batch_dim_name="batch",
        )
        with distribution.scope():
            backbone = MegaBackbone.from_preset("/path/to/preset")
        ```
        """
        if not isinstance(device_mesh, keras.distribution.DeviceMesh):
            raise ValueError(
                "Expected a keras.distribution.DeviceMesh; received "
                f"{type(device_mesh).__name__}."
            )
        for name in (model_parallel_dim_name, data_parallel_dim_name):
            if name not in device_mesh.axis_names:
                raise ValueError(
                    f"Axis {name!r} is not in the device mesh's axis names "
                    f"{tuple(device_mesh.axis_names)}."
                )
        model, data = model_parallel_dim_name, data_parallel_dim_name
        layout_map = keras.distribution.LayoutMap(device_mesh)
        layout_map["token_embedding/embeddings"] = (model, data)
        layout_map[
            "mega_layer_.*/(v_proj|mx_proj|fc1|q_proj|k_proj)/kernel"
        ] = (
            data,
            model,
        )
        layout_map["mega_layer_.*/(h_proj|fc2)/kernel"] = (model, data)
        return layout_map

    def get_config(self):
        config = super().get_config()
        for name in CONFIG_KEYS:
            config[name] = getattr(self, name)
        return config


# `default_lora_layer_names()`, in order.
LORA_LAYER_NAMES = ("v_proj", "mx_proj", "h_proj", "fc1", "fc2")

CONFIG_KEYS = (
    "vocabulary_size num_layers hidden_dim intermediate_dim shared_dim "
    "ema_dim ffn_dim bidirectional causal chunk_size truncation "
    "attention_activation relative_position_bias max_sequence_length "
    "normalization_type norm_affine normalize_before_attention "
    "normalize_before_ffn use_normalized_ffn activation dropout "
    "hidden_dropout attention_dropout ffn_activation_dropout feature_dropout "
    "num_segments cross_attention initializer_range ema_delta_alpha_range "
    "ema_beta_range ema_gamma_omega_range ema_init ema_max_timescale "
    "document_packing remat pad_token_id bos_token_id "
    "eos_token_id"
).split()
