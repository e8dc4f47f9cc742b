"""`MegaCausalLM`: Mega with HF `MegaForCausalLM`'s head."""

import keras
import numpy as np
from keras import ops
from keras_hub.models import CausalLM
from keras_hub.samplers import ContrastiveSampler

from keras_mega.keras_hub_compat import any_equal
from keras_mega.models.mega_backbone import MegaBackbone
from keras_mega.models.mega_causal_lm_preprocessor import (
    MegaCausalLMPreprocessor,
)
from keras_mega.models.mega_prefix_state import MegaPrefixState
from keras_mega.models.mega_task_utils import MegaLMTaskMixin
from keras_mega.models.mega_task_utils import check_vocabulary
from keras_mega.models.mega_task_utils import task_inputs


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaCausalLM(MegaLMTaskMixin, CausalLM):
    """Mega for causal (next token) language modeling.

    HF `MegaForCausalLM`'s head on a causal Mega backbone: an optional
    dense + tanh layer (HF `add_lm_hidden_dense_layer`), then a projection
    to the vocabulary (tied to the token embedding by default) plus a bias.
    With a `MegaCausalLMPreprocessor`, `fit()` takes raw strings.

    Inputs: `token_ids`, `padding_mask` (`[batch, length]`). Output: logits
    `[batch, length, vocabulary_size]`, position `t` predicting token
    `t + 1`.

    The backbone must be causal: `causal=True` and `bidirectional=False`
    (HF `is_decoder=True`, `bidirectional=False`); otherwise every position
    would see the tokens it predicts, and this raises a `ValueError`.
    `generate()` decodes with Mega's recurrent cache: per layer the EMA state
    and one chunk of keys/values (the whole length without chunking), so
    with `chunk_size` memory does not grow with the generated length. The
    prompt is prefilled in one parallel forward. Any keras-hub sampler
    works ("greedy", "top_k", "top_p", "beam", ...).

    Args:
        backbone: a causal `MegaBackbone`.
        preprocessor: a `MegaCausalLMPreprocessor` or `None`.
        use_hidden_dense: bool. HF's `add_lm_hidden_dense_layer`.
        tie_weights: bool. Project with the transposed token embedding
            (HF `tie_word_embeddings`, the default) instead of an own kernel.

    Examples:
    ```python
    causal_lm = keras_mega.models.MegaCausalLM.from_preset("path/to/hf_mega")
    causal_lm.fit(["The quick brown fox jumped.", "Call me Ishmael."])

    backbone = keras_mega.models.MegaBackbone(
        vocabulary_size=1000, num_layers=2, hidden_dim=64,
        intermediate_dim=128, shared_dim=32, ema_dim=8,
        bidirectional=False, causal=True, chunk_size=32,
    )
    causal_lm = keras_mega.models.MegaCausalLM(backbone)
    logits = causal_lm.predict({
        "token_ids": np.ones((2, 100), "int32"),
        "padding_mask": np.ones((2, 100), "int32"),
    })
    ```
    """

    backbone_cls = MegaBackbone
    preprocessor_cls = MegaCausalLMPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        use_hidden_dense=True,
        tie_weights=True,
        **kwargs,
    ):
        if not getattr(backbone, "causal", False) or getattr(
            backbone, "bidirectional", True
        ):
            raise ValueError(
                "MegaCausalLM needs a causal backbone: MegaBackbone("
                "causal=True, bidirectional=False) (HF: is_decoder=True, "
                f"bidirectional=False). Got causal={backbone.causal}, "
                f"bidirectional={backbone.bidirectional}."
            )
        check_vocabulary(backbone, preprocessor)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = self._lm_head(
            backbone, use_hidden_dense, tie_weights, name="lm_head"
        )

        # === Functional Model ===
        inputs, backbone_inputs = task_inputs(backbone)
        outputs = self.lm_head(backbone(backbone_inputs))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.use_hidden_dense = use_hidden_dense
        self.tie_weights = tie_weights

    # --- Generation (keras-hub's contract) ---

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Feeds `token_ids` `[B, T]` at position `cache_update_index`.

        Returns `(logits [B, T, vocab], hidden_states [B, T, hidden], cache)`,
        equal to the full forward at these positions. `T` may be more than
        one token, across chunk boundaries (streaming scoring).
        """
        hidden, cache = self.backbone.call_with_cache(
            token_ids, cache, cache_update_index
        )
        return self.lm_head(hidden), hidden, cache

    def _build_cache(self, token_ids, padding_mask):
        """Prefills the prompts in one forward; returns `(hidden, cache)`.

        keras-hub's sampler starts at `index = min(prompt lengths)` and first
        feeds the token at `index - 1` again. A KV cache would just rewrite
        that slot, but a recurrent EMA state would count the token twice, so
        the cache is the state *before* position `index - 1`.
        """
        lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        position = ops.maximum(ops.min(lengths) - 1, 0)
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        max_length = ops.shape(token_ids)[1]
        return self.backbone.prefill(inputs, position, max_length=max_length)

    def generate_step(self, inputs, stop_token_ids=None):
        """One batch of generation; compilable (JAX, TensorFlow).

        Args:
            inputs: dict with `"token_ids"` and `"padding_mask"`, prompts
                right-padded to the generation length.
            stop_token_ids: ids that end a sequence, or None.

        With `"state_tokens"` in `inputs`, it computes a prefix state
        instead (see `_state_step`), so that `prefill_state()` runs through
        the same compiled function as generation.
        """
        if "state_tokens" in inputs:
            return self._state_step(inputs)
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        if "prefix_cache" in inputs:
            # From a `MegaPrefixState` (see `generate(prefix_state=...)`):
            # `token_ids[:, 0]` is the prefix's last token, at absolute
            # position `offset`; the cache is the state before
            # `token_ids[:, prefix_start]`.
            cache = inputs["prefix_cache"]
            offset = ops.cast(inputs["prefix_position"], "int32")
            index = ops.cast(inputs["prefix_start"], "int32") + 1
            hidden_states = None
        else:
            hidden_states, cache = self._build_cache(token_ids, padding_mask)
            lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
            index = ops.min(lengths)
            offset = 0

        def next(prompt, cache, index):
            position = index - 1
            batch_size = ops.shape(prompt)[0]
            prompt = ops.slice(prompt, [0, position], [batch_size, 1])
            logits, hidden, cache = self.call_with_cache(
                prompt, cache, offset + position
            )
            return (
                ops.squeeze(logits, axis=1),
                ops.squeeze(hidden, axis=1),
                cache,
            )

        token_ids = self.sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        if stop_token_ids is not None:
            # Everything after the first stop token of a row is padding.
            end = any_equal(
                token_ids, stop_token_ids, ops.logical_not(padding_mask)
            )
            end = ops.cast(end, "int32")
            after = ops.cumsum(end, axis=-1) - end
            padding_mask = ops.logical_not(ops.cast(after, "bool"))
        else:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    # --- Reusable prefix state ---

    def prefill_state(self, prefix, max_length=None, prefix_state=None):
        """Reads a shared prefix once, for many continuations.

        Returns a `MegaPrefixState`: per layer the EMA state and one chunk
        of keys/values (all of them without chunking), which
        `generate(..., prefix_state=state)` and
        `score(..., prefix_state=state)` continue from, and which
        `state.save(path)` writes to disk.

        Args:
            prefix: int token ids `[B, P]` (or `[P]`), a dict with
                `"token_ids"` (and an all-ones `"padding_mask"`), or, with a
                preprocessor, a string or list of strings (tokenized with
                the start token, no end token) of equal token counts. Every
                row has `P >= 1` real tokens.
            max_length: int. Without chunking, the positions (prefix plus
                continuation) the state must serve; defaults to the
                backbone's `max_sequence_length`. Ignored with chunking,
                where any length works in constant memory.
            prefix_state: a `MegaPrefixState` that `prefix` extends (e.g. a
                conversation's next turn); the result covers both.

        Example:
        ```python
        state = causal_lm.prefill_state(document_ids).repeat(16)
        answers = causal_lm.generate(
            {"token_ids": questions, "padding_mask": questions_mask},
            stop_token_ids=None,
            prefix_state=state,
        )
        ```
        """
        if self.backbone.cross_attention:
            raise ValueError(
                "prefill_state() does not support cross_attention=True "
                "backbones (the state would depend on the encoder output)."
            )
        token_ids = self._prefix_token_ids(prefix)
        batch_size, length = token_ids.shape
        if length < 1:
            raise ValueError("The prefix needs at least one token.")
        last_token = ops.convert_to_tensor(token_ids[:, -1], "int32")
        if prefix_state is not None:
            prefix_state.check(self, batch_size)
            prefix_state.check_length(length)
            fed = np.concatenate(
                [
                    ops.convert_to_numpy(prefix_state.last_token)[:, None],
                    token_ids[:, :-1],
                ],
                axis=1,
            )
            cache = self._run_state_step(
                fed, prefix_state.layers, prefix_state.position - 1
            )
            return MegaPrefixState(
                cache,
                last_token,
                prefix_state.position + length,
                prefix_state.window,
                prefix_state.chunk_size,
                prefix_state.config_fingerprint,
                prefix_state.weights_fingerprint,
            )
        chunk_size = self.backbone.chunk_size
        if chunk_size:
            window = chunk_size
        else:
            window = int(max_length or self.backbone.max_sequence_length)
            if length > window:
                raise ValueError(
                    f"The prefix has {length} tokens, more than the {window} "
                    "positions an unchunked model's prefix state holds "
                    f"(max_length={window}). Pass `prefill_state(prefix, "
                    "max_length=N)` with N >= prefix plus continuation "
                    "length, or use a chunked model (`chunk_size`), whose "
                    "state does not grow with the length."
                )
        cache = self._run_state_step(token_ids, slots=window)
        return MegaPrefixState(
            cache,
            last_token,
            length,
            window,
            chunk_size,
            *MegaPrefixState.fingerprints(self),
        )

    def _state_step(self, inputs):
        """The cache before the last of `inputs["state_tokens"]` `[B, T]`.

        From `inputs["state_cache"]` at `inputs["state_position"]` when
        given, else prefilled from position 0 into a cache of
        `inputs["cache_slots"].shape[0]` slots (a static shape, so that the
        compiled function is traced for it).
        """
        tokens = inputs["state_tokens"]
        if "state_cache" in inputs:
            _, cache = self.backbone.call_with_cache(
                tokens, inputs["state_cache"], inputs["state_position"]
            )
            return {"cache": cache}
        length = ops.shape(tokens)[1]
        _, cache = self.backbone.prefill(
            {"token_ids": tokens, "padding_mask": ops.ones_like(tokens)},
            length - 1,
            max_length=ops.shape(inputs["cache_slots"])[0],
        )
        return {"cache": cache}

    def _run_state_step(self, tokens, cache=None, position=None, slots=None):
        inputs = {"state_tokens": ops.convert_to_tensor(tokens, "int32")}
        if cache is not None:
            inputs["state_cache"] = cache
            inputs["state_position"] = ops.convert_to_tensor(position, "int32")
        else:
            inputs["cache_slots"] = ops.zeros((slots,), "int8")
        function = self.make_generate_function()
        return function(inputs, stop_token_ids=None)["cache"]

    def _prefix_token_ids(self, prefix):
        if isinstance(prefix, dict):
            token_ids = np.asarray(ops.convert_to_numpy(prefix["token_ids"]))
            if "padding_mask" in prefix:
                mask = np.asarray(ops.convert_to_numpy(prefix["padding_mask"]))
                if not mask.astype(bool).all():
                    raise ValueError(
                        "A prefix has no padding: every row is P real tokens "
                        "(prefill rows of different lengths separately)."
                    )
        elif isinstance(prefix, str) or (
            isinstance(prefix, (list, tuple))
            and prefix
            and isinstance(prefix[0], str)
        ):
            rows = self._tokenize(
                [prefix] if isinstance(prefix, str) else prefix
            )
            start = self.preprocessor.tokenizer.start_token_id
            if self.preprocessor.add_start_token:
                rows = [[start] + row for row in rows]
            if len({len(row) for row in rows}) > 1:
                raise ValueError(
                    "The prefix strings have different token counts "
                    f"({[len(row) for row in rows]}); prefill them one by one."
                )
            token_ids = np.array(rows, "int32")
        else:
            token_ids = np.asarray(ops.convert_to_numpy(prefix))
        if token_ids.ndim == 1:
            token_ids = token_ids[None]
        if token_ids.ndim != 2 or not np.issubdtype(
            token_ids.dtype, np.integer
        ):
            raise ValueError(
                "A prefix is int token ids [batch, length]; got "
                f"{token_ids.dtype} {token_ids.shape}."
            )
        return token_ids.astype("int32")

    def _tokenize(self, texts):
        if self.preprocessor is None:
            raise ValueError(
                "Strings need a preprocessor; pass token ids instead."
            )
        ids = self.preprocessor.tokenizer(list(texts))
        if hasattr(ids, "to_list"):
            ids = ids.to_list()
        return [list(np.asarray(row).tolist()) for row in ids]

    def _continuations(self, inputs, max_length):
        """`(token_ids, padding_mask, from_strings)` as numpy."""
        if isinstance(inputs, dict):
            token_ids = np.asarray(ops.convert_to_numpy(inputs["token_ids"]))
            mask = inputs.get("padding_mask")
            mask = (
                np.ones_like(token_ids)
                if mask is None
                else np.asarray(ops.convert_to_numpy(mask))
            )
            if token_ids.ndim == 1:
                token_ids, mask = token_ids[None], mask[None]
            return token_ids.astype("int32"), mask.astype(bool), False
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(
                "With a prefix state, continuations are a dict with "
                "`token_ids`/`padding_mask` or (with a preprocessor) strings."
            )
        rows = self._tokenize(texts)
        length = max_length or self.preprocessor.sequence_length
        token_ids = np.full(
            (len(rows), length), self.preprocessor.tokenizer.pad_token_id
        )
        mask = np.zeros((len(rows), length), bool)
        for i, row in enumerate(rows):
            row = row[:length]
            token_ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return token_ids.astype("int32"), mask, True

    def generate(
        self,
        inputs,
        max_length=None,
        stop_token_ids="auto",
        strip_prompt=False,
        prefix_state=None,
    ):
        """keras-hub's `generate()`, and continuing from a prefix state.

        With `prefix_state` (from `prefill_state()`), `inputs` are the
        continuations of the prefix (a dict with right-padded `token_ids`
        and `padding_mask` `[B, L]`, or strings with a preprocessor, then
        tokenized without a start token) and the output holds the
        continuations and the generated tokens, as if the prefix had been
        prepended to every prompt, without reading it again. The tokens all
        continuations share are fed in one block; generation is compiled
        as keras-hub's is (JAX, TensorFlow), the state being an argument of
        the compiled function. Contrastive search is not available from a
        prefix state (it needs the prefix's hidden states).
        """
        if prefix_state is None:
            return super().generate(
                inputs,
                max_length=max_length,
                stop_token_ids=stop_token_ids,
                strip_prompt=strip_prompt,
            )
        if not isinstance(prefix_state, MegaPrefixState):
            raise TypeError(
                "prefix_state must be a MegaPrefixState (from "
                f"`prefill_state()`); got {type(prefix_state).__name__}."
            )
        if isinstance(self.sampler, ContrastiveSampler):
            raise ValueError(
                "Contrastive search needs the prompt's hidden states, which "
                "a prefix state does not keep; use another sampler."
            )
        if stop_token_ids == "auto":
            if self.preprocessor is None:
                raise ValueError(
                    'stop_token_ids="auto" needs a preprocessor; pass None '
                    "or a tuple of token ids."
                )
            stop_token_ids = [self.preprocessor.tokenizer.end_token_id]
        token_ids, mask, from_strings = self._continuations(inputs, max_length)
        batch_size, length = token_ids.shape
        lengths = mask.sum(-1)
        if not (mask == (np.arange(length)[None] < lengths[:, None])).all():
            raise ValueError(
                "Continuations must be right-padded: padding_mask is 1 for "
                "each row's tokens, then 0."
            )
        prefix_state.check(self, batch_size)
        prefix_state.check_length(length)

        # Row `i`: the prefix's last token, then the continuation.
        last = ops.convert_to_numpy(prefix_state.last_token)[:, None]
        token_ids = np.concatenate([last.astype("int32"), token_ids], 1)
        mask = np.concatenate([np.ones((batch_size, 1), bool), mask], 1)
        cache = prefix_state.layers
        start = int(lengths.min())
        if start:
            cache = self._run_state_step(
                token_ids[:, :start], cache, prefix_state.position - 1
            )
        step_inputs = {
            "token_ids": ops.convert_to_tensor(token_ids, "int32"),
            "padding_mask": ops.convert_to_tensor(mask, "bool"),
            "prefix_cache": cache,
            "prefix_position": ops.convert_to_tensor(
                prefix_state.position - 1, "int32"
            ),
            "prefix_start": ops.convert_to_tensor(start, "int32"),
        }
        generate_function = self.make_generate_function()
        outputs = generate_function(step_inputs, stop_token_ids=stop_token_ids)
        out_ids = np.asarray(ops.convert_to_numpy(outputs["token_ids"]))[:, 1:]
        out_mask = np.asarray(ops.convert_to_numpy(outputs["padding_mask"]))
        out_mask = out_mask[:, 1:].astype(bool)
        if strip_prompt:
            out_ids, out_mask = _strip(out_ids, out_mask, lengths)
        outputs = {"token_ids": out_ids, "padding_mask": out_mask}
        if not from_strings:
            return outputs
        texts = self.preprocessor.generate_postprocess(outputs)
        if hasattr(texts, "numpy"):
            texts = texts.numpy()
        texts = [
            t.decode("utf-8") if isinstance(t, bytes) else t
            for t in np.asarray(texts).tolist()
        ]
        return texts[0] if isinstance(inputs, str) else texts

    def score(
        self,
        token_ids,
        padding_mask=None,
        scoring_mode="logits",
        layer_intercept_fn=None,
        target_ids=None,
        prefix_state=None,
    ):
        """Scores token ids, optionally as continuations of a prefix state.

        keras-hub's `score()` (as on `GPT2CausalLM`), plus `prefix_state`.

        Args:
            token_ids: int `[B, L]`.
            padding_mask: `[B, L]`, 1 = real token (right-padded); defaults
                to all ones.
            scoring_mode: `"logits"`: `[B, L, vocab]`, position `t`
                predicting token `t + 1`; `"loss"`: the per-token
                cross-entropy `[B, L]` against `target_ids`; `"log_probs"`
                (needs `prefix_state`): `[B, L]`, the log-probability of
                each token given the prefix and the tokens before it, 0 at
                padding.
            layer_intercept_fn: `fn(x, i)` applied to the embeddings
                (`i = -1`) and to each block's output (`i = 0, 1, ...`).
            target_ids: int `[B, L]`, for `"loss"`.
            prefix_state: a `MegaPrefixState`: `token_ids` continue its
                prefix, and the result equals scoring prefix + tokens in
                one go at the tokens' positions.
        """
        if scoring_mode not in ("logits", "loss", "log_probs"):
            raise ValueError(
                "scoring_mode must be 'logits', 'loss' or 'log_probs'; got "
                f"{scoring_mode!r}."
            )
        if scoring_mode == "loss" and target_ids is None:
            raise ValueError(
                "scoring_mode='loss' needs target_ids (e.g. the token ids "
                "shifted left by one)."
            )
        if scoring_mode == "log_probs" and prefix_state is None:
            raise ValueError(
                "scoring_mode='log_probs' needs a prefix_state: the first "
                "token has no prediction otherwise. Use 'loss' with "
                "target_ids, or prefill the first token(s) as the prefix."
            )
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        if padding_mask is None:
            padding_mask = ops.ones((batch_size, length), "int32")
        padding_mask = ops.convert_to_tensor(padding_mask)
        if layer_intercept_fn is None:

            def layer_intercept_fn(x, unused_i):
                return x

        if prefix_state is None:
            x = layer_intercept_fn(self.backbone.embed(token_ids), -1)
            for i, block in enumerate(self.backbone.mega_layers):
                x, *_ = block(
                    x,
                    padding_mask=padding_mask,
                    return_attention_scores=True,
                )
                x = layer_intercept_fn(x, i)
            logits = self.lm_head(x)
        else:
            prefix_state.check(self, int(batch_size))
            prefix_state.check_length(int(length))
            last = ops.cast(prefix_state.last_token, "int32")[:, None]
            fed = ops.concatenate([last, token_ids], axis=1)
            position = prefix_state.position - 1
            x = layer_intercept_fn(self.backbone.embed(fed), -1)
            for i, (block, cache) in enumerate(
                zip(self.backbone.mega_layers, prefix_state.layers)
            ):
                x, _ = block.call_with_cache(x, cache, position)
                x = layer_intercept_fn(x, i)
            all_logits = self.lm_head(x)
            logits = all_logits[:, 1:]
            if scoring_mode == "log_probs":
                log_probs = ops.log_softmax(
                    ops.cast(all_logits[:, :-1], "float32"), axis=-1
                )
                picked = ops.take_along_axis(
                    log_probs, token_ids[..., None], axis=-1
                )[..., 0]
                return ops.where(ops.cast(padding_mask, "bool"), picked, 0.0)
        if scoring_mode == "logits":
            return logits
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        return loss(target_ids, logits)


def _strip(token_ids, mask, prompt_lengths):
    """Moves each row's generated tokens to its start (keras-hub's
    `strip_prompt`)."""
    out_ids, out_mask = np.zeros_like(token_ids), np.zeros_like(mask)
    for i, n in enumerate(prompt_lengths):
        new = token_ids[i, n:][mask[i, n:]]
        out_ids[i, : len(new)] = new
        out_mask[i, : len(new)] = True
    return out_ids, out_mask
