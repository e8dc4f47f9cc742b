"""`MegaPrefixState`: a prefilled prefix that many continuations reuse."""

import hashlib
import json

import keras
import numpy as np
from keras import ops

_FORMAT = "keras_mega.MegaPrefixState/1"


class MegaPrefixState:
    """The decoding state of `MegaCausalLM` after a shared prefix.

    Made by `MegaCausalLM.prefill_state(prefix)` and accepted by
    `generate(..., prefix_state=state)` and `score(..., prefix_state=state)`,
    which then continue after the prefix without reading it again. Per layer
    it holds the EMA state (`[B, D, N]`, float32) and one chunk of keys and
    values (`[B, W, ...]`, `W = chunk_size`); with chunking its size does not
    depend on the prefix length. An unchunked model keeps every key and
    value, so its state has `W = max_length` slots, the most positions
    (prefix plus continuation) it can serve.

    Following keras-hub's cache convention, the layers hold the state
    *before* the prefix's last token, kept in `last_token`: feeding it first
    yields the logits that predict the first continuation token.

    A state belongs to one model: it records a fingerprint of the model's
    configuration and of its weights, and using it with another model, or
    the same model after its weights changed, raises. It also has a batch
    size: use `repeat(n)` to serve `n` continuations of one prefix.

    Args:
        layers: tuple with one `(ema_state, keys, values)` per layer.
        last_token: int `[B]`, the prefix's last token.
        position: int. Number of prefix tokens.
        window: int. Key/value slots per layer.
        chunk_size: int or None. The model's attention chunk.
        config_fingerprint: str. See `MegaPrefixState.fingerprints`.
        weights_fingerprint: str.

    Examples:
    ```python
    state = causal_lm.prefill_state(document_ids)  # [1, 16384] int
    state = state.repeat(16)
    out = causal_lm.generate(
        {"token_ids": questions, "padding_mask": mask},
        stop_token_ids=None,
        prefix_state=state,
    )
    state.save("document.npz")
    state = keras_mega.models.MegaPrefixState.load("document.npz")
    ```
    """

    def __init__(
        self,
        layers,
        last_token,
        position,
        window,
        chunk_size,
        config_fingerprint,
        weights_fingerprint,
    ):
        self.layers = tuple(tuple(entry) for entry in layers)
        self.last_token = last_token
        self.position = int(position)
        self.window = int(window)
        self.chunk_size = chunk_size
        self.config_fingerprint = config_fingerprint
        self.weights_fingerprint = weights_fingerprint

    # --- Inspection ---

    @property
    def batch_size(self):
        return int(self.last_token.shape[0])

    @property
    def nbytes(self):
        """Bytes of the layers' state (EMA, keys, values)."""
        return sum(
            int(np.prod(t.shape)) * _itemsize(t)
            for entry in self.layers
            for t in entry
        )

    def __repr__(self):
        return (
            f"MegaPrefixState(position={self.position}, "
            f"batch_size={self.batch_size}, layers={len(self.layers)}, "
            f"window={self.window}, nbytes={self.nbytes})"
        )

    # --- Batch ---

    def repeat(self, batch_size):
        """This state for `batch_size` rows; the state must have one row."""
        if self.batch_size != 1:
            raise ValueError(
                f"repeat() needs a state of batch size 1; this one has "
                f"{self.batch_size} rows."
            )

        def tile(t):
            reps = [batch_size] + [1] * (len(t.shape) - 1)
            return ops.tile(t, reps)

        return MegaPrefixState(
            [[tile(t) for t in entry] for entry in self.layers],
            tile(self.last_token),
            self.position,
            self.window,
            self.chunk_size,
            self.config_fingerprint,
            self.weights_fingerprint,
        )

    # --- Checks ---

    @staticmethod
    def fingerprints(causal_lm):
        """`(config, weights)` fingerprints of a `MegaCausalLM`.

        The config one hashes the backbone's and the head's configuration
        (without the model's name); the weights one hashes the first values
        of every weight, which any training step or reload of other weights
        changes.
        """
        config = dict(causal_lm.backbone.get_config())
        config.pop("name", None)
        config.pop("trainable", None)
        config["head"] = {
            "use_hidden_dense": causal_lm.use_hidden_dense,
            "tie_weights": causal_lm.tie_weights,
        }
        text = json.dumps(config, sort_keys=True, default=str)
        config_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
        digest = hashlib.sha256()
        for variable in causal_lm.backbone.weights + causal_lm.lm_head.weights:
            if "seed_generator" in variable.path:
                continue  # Dropout seeds change on every training call.
            head = ops.reshape(variable.value, (-1,))[:64]
            values = ops.convert_to_numpy(ops.cast(head, "float32"))
            digest.update(variable.path.encode())
            digest.update(np.ascontiguousarray(values).tobytes())
        return config_hash, digest.hexdigest()[:16]

    def check(self, causal_lm, batch_size=None, length=None):
        """Raises a `ValueError` unless this state fits `causal_lm` (and
        `batch_size` rows of `length` more tokens, when given)."""
        config_hash, weights_hash = self.fingerprints(causal_lm)
        if config_hash != self.config_fingerprint:
            raise ValueError(
                "This MegaPrefixState was made by a model with another "
                f"configuration (fingerprint {self.config_fingerprint}, this "
                f"model's is {config_hash}). Prefill the prefix with this "
                "model: `causal_lm.prefill_state(prefix)`."
            )
        if weights_hash != self.weights_fingerprint:
            raise ValueError(
                "This MegaPrefixState was made with other weights than this "
                "model's (trained or loaded since?). Prefill the prefix "
                "again: `causal_lm.prefill_state(prefix)`."
            )
        if batch_size is not None and batch_size != self.batch_size:
            hint = (
                f" Use `state.repeat({batch_size})` to serve {batch_size} "
                "continuations of this prefix."
                if self.batch_size == 1
                else " Prefill a state with one prefix row per continuation, "
                "or a single row and `state.repeat(n)`."
            )
            raise ValueError(
                f"The prefix state has batch size {self.batch_size}, the "
                f"continuations {batch_size}.{hint}"
            )
        if length is not None:
            self.check_length(length)

    def check_length(self, continuation_length):
        """Raises unless `continuation_length` more tokens fit the cache."""
        if self.chunk_size:
            return
        total = self.position + int(continuation_length)
        if total > self.window:
            raise ValueError(
                f"The prefix ({self.position} tokens) and continuation "
                f"({continuation_length} tokens) need {total} positions, more "
                f"than the {self.window} this unchunked model's prefix state "
                "holds. Prefill with `prefill_state(prefix, max_length=N)`, "
                f"N >= {total}, or use a chunked model (`chunk_size`), whose "
                "state does not grow with the length."
            )

    # --- Save / load ---

    def save(self, path):
        """Writes the state to `path` (a `.npz` file); exact round trip."""
        arrays, dtypes = {}, {}
        tensors = {"last_token": self.last_token}
        for i, entry in enumerate(self.layers):
            if len(entry) > len(_ENTRY_NAMES):
                raise ValueError(
                    f"Layer {i} of this state has {len(entry)} parts; a "
                    f"saved state names at most {len(_ENTRY_NAMES)} "
                    f"({', '.join(_ENTRY_NAMES)})."
                )
            for name, t in zip(_ENTRY_NAMES, entry):
                tensors[f"layer_{i}/{name}"] = t
        for key, t in tensors.items():
            dtype = _dtype_name(t)
            value = ops.convert_to_numpy(t)
            if dtype == "bfloat16":
                value = value.view(np.uint16)
            arrays[key] = np.ascontiguousarray(value)
            dtypes[key] = dtype
        metadata = {
            "format": _FORMAT,
            "num_layers": len(self.layers),
            "position": self.position,
            "window": self.window,
            "chunk_size": self.chunk_size,
            "config_fingerprint": self.config_fingerprint,
            "weights_fingerprint": self.weights_fingerprint,
            "dtypes": dtypes,
        }
        arrays["metadata"] = np.array(json.dumps(metadata))
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path):
        """Reads a state written by `save()`."""
        with np.load(path, allow_pickle=False) as data:
            if "metadata" not in data:
                raise ValueError(f"{path} is not a saved MegaPrefixState.")
            metadata = json.loads(str(data["metadata"]))
            if metadata.get("format") != _FORMAT:
                raise ValueError(
                    f"{path} has format {metadata.get('format')!r}; "
                    f"expected {_FORMAT!r}."
                )
            dtypes = metadata["dtypes"]

            def read(key):
                value = data[key]
                if dtypes[key] == "bfloat16":
                    import ml_dtypes

                    value = value.view(ml_dtypes.bfloat16)
                return ops.convert_to_tensor(value, dtype=dtypes[key])

            layers = [
                [
                    read(f"layer_{i}/{name}")
                    for name in _ENTRY_NAMES
                    if f"layer_{i}/{name}" in data
                ]
                for i in range(metadata["num_layers"])
            ]
            return cls(
                layers,
                read("last_token"),
                metadata["position"],
                metadata["window"],
                metadata["chunk_size"],
                metadata["config_fingerprint"],
                metadata["weights_fingerprint"],
            )


# The parts of a layer's cache entry: a packed-documents backbone
# (`document_packing=True`) adds each cached key's document and the last
# token's (document id, position in its document).
_ENTRY_NAMES = ("ema_state", "keys", "values", "key_groups", "last_document")


def _dtype_name(t):
    return keras.backend.standardize_dtype(t.dtype)


def _itemsize(t):
    dtype = _dtype_name(t)
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
