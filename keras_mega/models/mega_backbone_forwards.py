"""`MegaBackbone`'s forwards besides its functional graph: per-layer
outputs, and decoding with a cache (what `generate()`, streaming and prefix
states use)."""

import keras

from keras_mega.layers.mega_documents import decoding_document_ids


class MegaBackboneForwards:
    """`feature_extractor`, `prefill`, `empty_cache` and `call_with_cache`
    of `MegaBackbone` (a mixin: it reads the backbone's `mega_layers`,
    `embed`, `_blocks` and options). The graph and `feature_extractor` run
    the same `_blocks`; decoding runs each block's `MegaBlock.prefill` /
    `MegaBlock.call_with_cache`."""

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
        x = self.embed(
            inputs.get("token_ids"),
            inputs.get("segment_ids"),
            inputs_embeds=inputs.get("inputs_embeds"),
        )
        hidden_states, attentions, cross_attentions = self._blocks(x, inputs)
        outputs = {"sequence_output": hidden_states[-1]}
        if output_hidden_states:
            outputs["hidden_states"] = hidden_states
        if output_attentions:
            outputs["attentions"] = attentions
            if cross_attentions:
                outputs["cross_attentions"] = cross_attentions
        return keras.Model(inputs, outputs, name=f"{self.name}_features")

    # --- Decoding with a cache (used by MegaCausalLM) ---

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
        document_ids = decoding_document_ids(
            inputs.get("document_ids"),
            inputs["token_ids"],
            self.document_packing,
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
            decoding_document_ids(
                document_ids, token_ids, self.document_packing
            )
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
