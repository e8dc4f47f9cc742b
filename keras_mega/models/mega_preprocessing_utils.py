"""Helpers and base classes of Mega's preprocessors.

The masked LM and text classifier preprocessors pack segments RoBERTa's way
(`RobertaPacking`). The token classification, multiple choice and question
answering preprocessors (`MegaPythonPreprocessor`) do their alignment
(words to tokens, character spans to tokens) in plain Python/NumPy. Called
directly they run eagerly; inside a `tf.data` pipeline (where keras-hub's
`fit()` puts them when Grain is not installed) the same code runs through
`tf.py_function`, so both paths give identical results.
"""

import keras
import numpy as np
from keras_hub.layers import MultiSegmentPacker
from keras_hub.models import Preprocessor

from keras_mega.models.mega_preset_io import MegaPresetMixin

try:
    import tensorflow as tf
except ImportError:  # TF is only needed inside `tf.data` pipelines.
    tf = None


def in_tf_graph():
    """Whether we are being traced by TF (e.g. inside `tf.data.map`)."""
    return tf is not None and not tf.executing_eagerly()


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    return value


def to_python(x):
    """Tensors and arrays to nested Python lists, bytes to `str`."""
    if x is None or isinstance(x, (str, bytes, int, float)):
        return _decode(x)
    if tf is not None and isinstance(x, tf.RaggedTensor):
        return _decode(x.to_list())
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    if isinstance(x, np.ndarray):
        return _decode(x.tolist())
    if isinstance(x, (list, tuple)):
        return [to_python(v) for v in x]
    try:  # A backend tensor.
        import keras

        return _decode(keras.ops.convert_to_numpy(x).tolist())
    except Exception:
        return x


def as_string_batch(x, name):
    """A string or a batch of strings -> (list of str, batched)."""
    x = to_python(x)
    if isinstance(x, str):
        return [x], False
    if isinstance(x, list) and all(isinstance(s, str) for s in x):
        return x, True
    raise ValueError(
        f"`{name}` must be a string or a batch (list or rank-1 tensor) of "
        f"strings. Received: {x!r:.200}"
    )


def run_in_tf_graph(fn, inputs, specs):
    """Runs `fn(*python_inputs) -> tuple of arrays` inside a TF graph.

    Args:
        fn: a Python function of the decoded inputs (nested lists of `str`
            and numbers), returning one NumPy array per entry of `specs`.
        inputs: a list of tensors (dense or ragged) or `None`s.
        specs: a list of `tf.TensorSpec`s, the outputs' dtypes and shapes.

    Returns:
        A list of tensors.
    """
    present = [i for i, t in enumerate(inputs) if t is not None]
    tensors = [inputs[i] for i in present]

    def eager_fn(*args):
        values = [None] * len(inputs)
        for i, arg in zip(present, args):
            values[i] = to_python(arg)
        outputs = fn(*values)
        return [
            np.asarray(o, dtype=s.dtype.as_numpy_dtype)
            for o, s in zip(outputs, specs)
        ]

    outputs = tf.py_function(eager_fn, tensors, [s.dtype for s in specs])
    for output, spec in zip(outputs, specs):
        output.set_shape(spec.shape)
    return outputs


def truncate_pair(first_length, second_length, budget, truncate):
    """How many tokens of each of two segments fit into `budget`.

    `"round_robin"` gives one token at a time to each segment that still
    has some (as keras-hub's `MultiSegmentPacker`); `"waterfall"` fills the
    first segment, then the second.
    """
    if truncate == "waterfall":
        first = min(first_length, budget)
        return first, min(second_length, budget - first)
    if truncate != "round_robin":
        raise ValueError(
            f'truncate must be "round_robin" or "waterfall", got {truncate!r}.'
        )
    if first_length + second_length <= budget:
        return first_length, second_length
    half = budget // 2  # The first segment gets the odd token.
    if first_length <= budget - half:
        return first_length, budget - first_length
    if second_length <= half:
        return budget - second_length, second_length
    return budget - half, half


def pack_pair(first, second, sequence_length, tokenizer, truncate):
    """`<s> first </s></s> second </s>` (RoBERTa), truncated and padded.

    Returns the ids (a list of length `sequence_length`), and how many tokens
    of `first` and of `second` were kept.
    """
    budget = sequence_length - 4
    if budget < 0:
        raise ValueError(
            "sequence_length must be at least 4 for segment pairs, got "
            f"{sequence_length}."
        )
    n_first, n_second = truncate_pair(len(first), len(second), budget, truncate)
    start, end = tokenizer.start_token_id, tokenizer.end_token_id
    ids = [start, *first[:n_first], end, end, *second[:n_second], end]
    ids += [tokenizer.pad_token_id] * (sequence_length - len(ids))
    return ids, n_first, n_second


class RobertaPacking(MegaPresetMixin):
    """Packs keras-hub's segments RoBERTa's way, without segment ids.

    For keras-hub's `MaskedLMPreprocessor` and `TextClassifierPreprocessor`:
    one segment becomes `<s> a </s>`, a pair `<s> a </s></s> b </s>` (HF's
    `RobertaTokenizer` layout), padded with `<pad>`.
    """

    def build(self, input_shape):
        super().build(input_shape)
        # RoBERTa doubles the separator between segments.
        self.packer = MultiSegmentPacker(
            start_value=self.tokenizer.start_token_id,
            end_value=self.tokenizer.end_token_id,
            sep_value=[self.tokenizer.end_token_id] * 2,
            pad_value=self.tokenizer.pad_token_id,
            truncate=self.truncate,
            sequence_length=self.sequence_length,
        )

    def call(self, x, y=None, sample_weight=None):
        output = super().call(x, y=y, sample_weight=sample_weight)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(output)
        # Mega (like HF's RoBERTa tokenizer) uses no segment ids.
        del x["segment_ids"]
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


class MegaPythonPreprocessor(MegaPresetMixin, Preprocessor):
    """A preprocessor whose work is a Python/NumPy function, `_process`.

    `_run` calls it eagerly, or through `tf.py_function` when traced by
    `tf.data`.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
    """

    def __init__(self, tokenizer, sequence_length=512, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length

    def build(self, input_shape):
        # Nothing to build (the work is Python). Without this, Keras' default
        # `build` warns on every reload that the tokenizer is unbuilt state.
        self.built = True

    def _process(self, *inputs):
        raise NotImplementedError

    def _run(self, inputs, example_specs):
        """`self._process(*inputs)`, eagerly or inside a TF graph.

        Args:
            inputs: the arguments; the first one (strings) tells a batch
                from a single example.
            example_specs: `(shape, dtype)` of each output for one example.

        Returns:
            The outputs: NumPy arrays, or tensors inside a TF graph.
        """
        if not in_tf_graph():
            return self._process(*inputs)
        first = inputs[0]
        if not isinstance(first, tf.RaggedTensor):
            first = tf.convert_to_tensor(first)
        batch = [] if first.shape.rank == 0 else [None]
        specs = [
            tf.TensorSpec(batch + list(shape), dtype)
            for shape, dtype in example_specs
        ]
        return run_in_tf_graph(self._process, [first, *inputs[1:]], specs)

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length})
        return config


class MegaPairPreprocessor(MegaPythonPreprocessor):
    """A `MegaPythonPreprocessor` of pairs: `x = (first, second)`, packed
    as `<s> first </s></s> second </s>` and truncated by `truncate`.

    Args:
        tokenizer: a `MegaTokenizer`.
        sequence_length: int. Length of the packed sequences.
        truncate: `"round_robin"` or `"waterfall"`.
    """

    # The names of the two parts of `x`, for error messages.
    pair_names = ("first", "second")

    def __init__(
        self, tokenizer, sequence_length=512, truncate="round_robin", **kwargs
    ):
        super().__init__(tokenizer, sequence_length, **kwargs)
        self.truncate = truncate

    def _unpack_pair(self, x):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            first, second = self.pair_names
            raise ValueError(
                f"{type(self).__name__} takes x=({first}, {second}). "
                f"Received: {x!r:.200}"
            )
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"truncate": self.truncate})
        return config
