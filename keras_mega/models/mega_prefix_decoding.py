"""`MegaCausalLM` from a reusable prefix state: prefill, generate, score.

`MegaCausalLM.prefill_state()`, `generate(..., prefix_state=...)` and
`score(..., prefix_state=...)` call these functions; the state itself is a
`MegaPrefixState`. Prefill runs through the causal LM's compiled
`generate_step` (its `"state_tokens"` branch, `state_step` here), so that
one compiled function serves generation and prefill.
"""

import numpy as np
from keras import ops
from keras_hub.samplers import ContrastiveSampler

from keras_mega.models.mega_prefix_state import MegaPrefixState


def prefill_state(causal_lm, prefix, max_length=None, prefix_state=None):
    """`MegaCausalLM.prefill_state()` (see there)."""
    backbone = causal_lm.backbone
    if backbone.cross_attention:
        raise ValueError(
            "prefill_state() does not support cross_attention=True "
            "backbones (the state would depend on the encoder output)."
        )
    token_ids = _prefix_token_ids(causal_lm, prefix)
    batch_size, length = token_ids.shape
    if length < 1:
        raise ValueError("The prefix needs at least one token.")
    last_token = ops.convert_to_tensor(token_ids[:, -1], "int32")
    if prefix_state is not None:
        prefix_state.check(causal_lm, batch_size, length)
        last = ops.convert_to_numpy(prefix_state.last_token)[:, None]
        fed = np.concatenate([last, token_ids[:, :-1]], axis=1)
        cache = _run_state_step(
            causal_lm, fed, prefix_state.layers, prefix_state.position - 1
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
    chunk_size = backbone.chunk_size
    window = chunk_size or int(max_length or backbone.max_sequence_length)
    if not chunk_size and length > window:
        raise ValueError(
            f"The prefix has {length} tokens, more than the {window} "
            "positions an unchunked model's prefix state holds "
            f"(max_length={window}). Pass `prefill_state(prefix, "
            "max_length=N)` with N >= prefix plus continuation "
            "length, or use a chunked model (`chunk_size`), whose "
            "state does not grow with the length."
        )
    cache = _run_state_step(causal_lm, token_ids, slots=window)
    return MegaPrefixState(
        cache,
        last_token,
        length,
        window,
        chunk_size,
        *MegaPrefixState.fingerprints(causal_lm),
    )


def state_step(backbone, inputs):
    """The cache before the last of `inputs["state_tokens"]` `[B, T]`.

    From `inputs["state_cache"]` at `inputs["state_position"]` when given,
    else prefilled from position 0 into a cache of
    `inputs["cache_slots"].shape[0]` slots (a static shape, so that the
    compiled function is traced for it).
    """
    tokens = inputs["state_tokens"]
    if "state_cache" in inputs:
        _, cache = backbone.call_with_cache(
            tokens, inputs["state_cache"], inputs["state_position"]
        )
        return {"cache": cache}
    length = ops.shape(tokens)[1]
    _, cache = backbone.prefill(
        {"token_ids": tokens, "padding_mask": ops.ones_like(tokens)},
        length - 1,
        max_length=ops.shape(inputs["cache_slots"])[0],
    )
    return {"cache": cache}


def step_start(inputs):
    """`(cache, offset, index)` where `generate_step` starts from a state.

    `token_ids[:, 0]` is the prefix's last token, at absolute position
    `offset`; the cache is the state before `token_ids[:, prefix_start]`.
    """
    offset = ops.cast(inputs["prefix_position"], "int32")
    index = ops.cast(inputs["prefix_start"], "int32") + 1
    return inputs["prefix_cache"], offset, index


def _run_state_step(causal_lm, tokens, cache=None, position=None, slots=None):
    inputs = {"state_tokens": ops.convert_to_tensor(tokens, "int32")}
    if cache is not None:
        inputs["state_cache"] = cache
        inputs["state_position"] = ops.convert_to_tensor(position, "int32")
    else:
        inputs["cache_slots"] = ops.zeros((slots,), "int8")
    function = causal_lm.make_generate_function()
    return function(inputs, stop_token_ids=None)["cache"]


def _is_strings(x):
    return isinstance(x, str) or (
        isinstance(x, (list, tuple)) and x and isinstance(x[0], str)
    )


def _prefix_token_ids(causal_lm, prefix):
    if isinstance(prefix, dict):
        token_ids = np.asarray(ops.convert_to_numpy(prefix["token_ids"]))
        if "padding_mask" in prefix:
            mask = np.asarray(ops.convert_to_numpy(prefix["padding_mask"]))
            if not mask.astype(bool).all():
                raise ValueError(
                    "A prefix has no padding: every row is P real tokens "
                    "(prefill rows of different lengths separately)."
                )
    elif _is_strings(prefix):
        rows = _tokenize(
            causal_lm, [prefix] if isinstance(prefix, str) else prefix
        )
        preprocessor = causal_lm.preprocessor
        if preprocessor.add_start_token:
            start = preprocessor.tokenizer.start_token_id
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
    if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(
            "A prefix is int token ids [batch, length]; got "
            f"{token_ids.dtype} {token_ids.shape}."
        )
    return token_ids.astype("int32")


def _tokenize(causal_lm, texts):
    if causal_lm.preprocessor is None:
        raise ValueError("Strings need a preprocessor; pass token ids instead.")
    ids = causal_lm.preprocessor.tokenizer(list(texts))
    if hasattr(ids, "to_list"):
        ids = ids.to_list()
    return [list(np.asarray(row).tolist()) for row in ids]


def _continuations(causal_lm, inputs, max_length):
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
    rows = _tokenize(causal_lm, texts)
    preprocessor = causal_lm.preprocessor
    length = max_length or preprocessor.sequence_length
    token_ids = np.full(
        (len(rows), length), preprocessor.tokenizer.pad_token_id
    )
    mask = np.zeros((len(rows), length), bool)
    for i, row in enumerate(rows):
        row = row[:length]
        token_ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return token_ids.astype("int32"), mask, True


def generate(
    causal_lm, inputs, max_length, stop_token_ids, strip_prompt, prefix_state
):
    """`MegaCausalLM.generate(..., prefix_state=...)` (see there)."""
    if not isinstance(prefix_state, MegaPrefixState):
        raise TypeError(
            "prefix_state must be a MegaPrefixState (from "
            f"`prefill_state()`); got {type(prefix_state).__name__}."
        )
    if isinstance(causal_lm.sampler, ContrastiveSampler):
        raise ValueError(
            "Contrastive search needs the prompt's hidden states, which "
            "a prefix state does not keep; use another sampler."
        )
    preprocessor = causal_lm.preprocessor
    if stop_token_ids == "auto":
        if preprocessor is None:
            raise ValueError(
                'stop_token_ids="auto" needs a preprocessor; pass None '
                "or a tuple of token ids."
            )
        stop_token_ids = [preprocessor.tokenizer.end_token_id]
    token_ids, mask, from_strings = _continuations(
        causal_lm, inputs, max_length
    )
    batch_size, length = token_ids.shape
    lengths = mask.sum(-1)
    if not (mask == (np.arange(length)[None] < lengths[:, None])).all():
        raise ValueError(
            "Continuations must be right-padded: padding_mask is 1 for "
            "each row's tokens, then 0."
        )
    prefix_state.check(causal_lm, batch_size, length)

    # Row `i`: the prefix's last token, then the continuation.
    last = ops.convert_to_numpy(prefix_state.last_token)[:, None]
    token_ids = np.concatenate([last.astype("int32"), token_ids], 1)
    mask = np.concatenate([np.ones((batch_size, 1), bool), mask], 1)
    cache = prefix_state.layers
    start = int(lengths.min())
    if start:
        cache = _run_state_step(
            causal_lm, token_ids[:, :start], cache, prefix_state.position - 1
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
    generate_function = causal_lm.make_generate_function()
    outputs = generate_function(step_inputs, stop_token_ids=stop_token_ids)
    out_ids = np.asarray(ops.convert_to_numpy(outputs["token_ids"]))[:, 1:]
    out_mask = np.asarray(ops.convert_to_numpy(outputs["padding_mask"]))
    out_mask = out_mask[:, 1:].astype(bool)
    if strip_prompt:
        out_ids, out_mask = _strip(out_ids, out_mask, lengths)
    outputs = {"token_ids": out_ids, "padding_mask": out_mask}
    if not from_strings:
        return outputs
    texts = preprocessor.generate_postprocess(outputs)
    if hasattr(texts, "numpy"):
        texts = texts.numpy()
    texts = [
        t.decode("utf-8") if isinstance(t, bytes) else t
        for t in np.asarray(texts).tolist()
    ]
    return texts[0] if isinstance(inputs, str) else texts


def _strip(token_ids, mask, prompt_lengths):
    """Moves each row's generated tokens to its start (keras-hub's
    `strip_prompt`)."""
    out_ids, out_mask = np.zeros_like(token_ids), np.zeros_like(mask)
    for i, n in enumerate(prompt_lengths):
        new = token_ids[i, n:][mask[i, n:]]
        out_ids[i, : len(new)] = new
        out_mask[i, : len(new)] = True
    return out_ids, out_mask


def score_logits(
    causal_lm, token_ids, padding_mask, intercept, prefix_state, log_probs
):
    """The logits of `token_ids` continuing `prefix_state` (or, with
    `log_probs`, each token's log-probability, 0 at padding)."""
    batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
    prefix_state.check(causal_lm, int(batch_size), int(length))
    backbone = causal_lm.backbone
    last = ops.cast(prefix_state.last_token, "int32")[:, None]
    fed = ops.concatenate([last, token_ids], axis=1)
    position = prefix_state.position - 1
    x = intercept(backbone.embed(fed), -1)
    for i, (block, cache) in enumerate(
        zip(backbone.mega_layers, prefix_state.layers)
    ):
        x, _ = block.call_with_cache(x, cache, position)
        x = intercept(x, i)
    all_logits = causal_lm.lm_head(x)
    if not log_probs:
        return all_logits[:, 1:]
    log_probs = ops.log_softmax(
        ops.cast(all_logits[:, :-1], "float32"), axis=-1
    )
    picked = ops.take_along_axis(log_probs, token_ids[..., None], axis=-1)
    return ops.where(ops.cast(padding_mask, "bool"), picked[..., 0], 0.0)
