"""Packed documents: every token's output is that of its document alone."""

import keras
import numpy as np
import pytest
from mega_fixtures import CAUSAL
from mega_fixtures import tiny_config
from mega_fixtures import tiny_tokenizer

from keras_mega.models import MegaBackbone

pytestmark = pytest.mark.usefixtures("quick_jax_compiles")

CHUNK = 4
# Row 0 (chunk 4): boundaries inside chunks (3, 9, 17, 21, 27, 29), on a
# chunk edge (8) and a one-token document; ids repeat (each maximal run is
# a document). Row 1 ends in padding.
ROWS = ([3, 5, 1, 8, 4, 6, 2, 3], [4, 12, 1, 12])
PADDING = 3
LENGTH = 32


def backbone(**kwargs):
    config = tiny_config(
        vocabulary_size=40, max_sequence_length=LENGTH, document_packing=True
    )
    return MegaBackbone(**{**config, **kwargs})


def unpacked_copy(packed):
    config = packed.get_config()
    config["document_packing"] = False
    plain = MegaBackbone.from_config(config)
    plain.set_weights(packed.get_weights())
    return plain


def packed_batch(seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(3, 40, (2, LENGTH)).astype("int32")
    padding_mask = np.ones((2, LENGTH), "int32")
    padding_mask[1, LENGTH - PADDING :] = 0
    document_ids = np.zeros((2, LENGTH), "int32")
    spans = []
    for row, lengths in enumerate(ROWS):
        start = 0
        for i, n in enumerate(lengths):
            document_ids[row, start : start + n] = i % 3  # ids repeat
            spans.append((row, start, n))
            start += n
        document_ids[row, start:] = 7  # padding: its own id
    return {
        "token_ids": token_ids,
        "padding_mask": padding_mask,
        "document_ids": document_ids,
    }, spans


def documents_alone(plain, inputs, spans):
    """Each document alone, as one right-padded batch (padding changes
    nothing: see the padding tests), plus two of them unpadded."""
    longest = max(n for _, _, n in spans)
    ids = np.zeros((len(spans), longest), "int32")
    mask = np.zeros((len(spans), longest), "int32")
    for i, (row, start, n) in enumerate(spans):
        ids[i, :n] = inputs["token_ids"][row, start : start + n]
        mask[i, :n] = 1
    out = keras.ops.convert_to_numpy(
        plain({"token_ids": ids, "padding_mask": mask})
    )
    return [out[i, :n] for i, (_, _, n) in enumerate(spans)]


# A pairwise covering set of causal x chunked x attention x bias (every
# pair of values appears), plus truncated EMA kernels.
CONFIGS = {
    "causal_chunked_softmax_rotary": dict(
        causal=True, chunk_size=CHUNK, attention_activation="softmax"
    ),
    "bidir_full_softmax_simple": dict(relative_position_bias="simple"),
    "causal_full_laplace_simple": dict(
        causal=True,
        attention_activation="laplace",
        relative_position_bias="simple",
    ),
    "bidir_chunked_laplace_rotary": dict(
        chunk_size=CHUNK, attention_activation="laplace"
    ),
    "bidir_chunked_relu2_simple": dict(
        chunk_size=CHUNK,
        attention_activation="relu2",
        relative_position_bias="simple",
    ),
    "causal_full_relu2_rotary": dict(causal=True, attention_activation="relu2"),
    "bidir_chunked_softmax_truncated": dict(chunk_size=CHUNK, truncation=3),
    "causal_chunked_relu2_truncated": dict(
        causal=True,
        chunk_size=CHUNK,
        attention_activation="relu2",
        truncation=5,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_row_equals_documents_alone(name):
    packed = backbone(**CONFIGS[name])
    inputs, spans = packed_batch()
    out = keras.ops.convert_to_numpy(packed(inputs))
    plain = unpacked_copy(packed)
    alone = documents_alone(plain, inputs, spans)
    for (row, start, n), expected in zip(spans, alone):
        np.testing.assert_allclose(
            out[row, start : start + n],
            expected,
            atol=1e-5,
            err_msg=f"{name}: document at row {row}, {start}:{start + n}",
        )
    # Unpadded, alone: the one-token document and the chunk-edge one.
    for row, start, n in (spans[2], spans[3]):
        ids = inputs["token_ids"][row : row + 1, start : start + n]
        expected = keras.ops.convert_to_numpy(
            plain({"token_ids": ids, "padding_mask": np.ones_like(ids)})
        )
        np.testing.assert_allclose(
            out[row : row + 1, start : start + n], expected, atol=1e-5
        )


def test_one_document_per_row_equals_unpacked():
    packed = backbone(causal=True, chunk_size=CHUNK)
    inputs, _ = packed_batch()
    inputs["document_ids"] = np.zeros_like(inputs["token_ids"])
    plain = unpacked_copy(packed)
    expected = plain({k: v for k, v in inputs.items() if k != "document_ids"})
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(packed(inputs)),
        keras.ops.convert_to_numpy(expected),
        atol=1e-5,
    )


@pytest.mark.parametrize("chunk_size", [CHUNK, None])
def test_cached_decoding_with_documents_equals_forward(chunk_size):
    packed = backbone(causal=True, bidirectional=False, chunk_size=chunk_size)
    inputs, _ = packed_batch(seed=1)
    inputs["padding_mask"] = np.ones_like(inputs["token_ids"])
    full = keras.ops.convert_to_numpy(packed(inputs))
    ids, docs = inputs["token_ids"], inputs["document_ids"]

    def feed(cache, position, sizes):
        """The outputs of `call_with_cache` on blocks of `sizes` tokens."""
        outputs = []
        for size in sizes:
            block = slice(position, position + size)
            y, cache = packed.call_with_cache(
                ids[:, block], cache, position, document_ids=docs[:, block]
            )
            outputs.append(keras.ops.convert_to_numpy(y))
            position += size
        return np.concatenate(outputs, axis=1)

    # Prefill 9 tokens (row 0: three documents), then feed blocks: single
    # tokens that start new documents (9 in row 0, 17 in both rows) and
    # blocks across chunk edges and boundaries.
    _, cache = packed.prefill(inputs, 9, max_length=LENGTH)
    np.testing.assert_allclose(
        feed(cache, 9, (1, 7, 1, 14)), full[:, 9:], atol=1e-5
    )

    # Streaming from an empty cache (the same block sizes: on JAX each
    # new shape compiles).
    cache = packed.empty_cache(2, LENGTH)
    np.testing.assert_allclose(
        feed(cache, 0, (1, 7, 1, 14, 1, 7, 1)), full, atol=1e-5
    )


def test_call_with_cache_without_ids_continues_the_document():
    packed = backbone(causal=True, bidirectional=False, chunk_size=CHUNK)
    inputs, _ = packed_batch(seed=2)
    inputs["padding_mask"] = np.ones_like(inputs["token_ids"])
    ids = inputs["token_ids"]
    # The last document of row 0 starts at 29; of row 1 at 20.
    inputs["document_ids"][:, 29:] = inputs["document_ids"][:, 29:30]
    full = keras.ops.convert_to_numpy(packed(inputs))
    _, cache = packed.prefill(inputs, 30, max_length=LENGTH)
    y, _ = packed.call_with_cache(ids[:, 30:], cache, 30)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y), full[:, 30:], atol=1e-5
    )


def test_config_round_trip():
    packed = backbone(chunk_size=CHUNK)
    assert packed.get_config()["document_packing"] is True
    restored = MegaBackbone.from_config(packed.get_config())
    assert "document_ids" in restored.input
    assert "document_ids" not in unpacked_copy(packed).input


# --- Bad input ---


def test_missing_document_ids_is_an_error():
    packed = backbone()
    inputs, _ = packed_batch()
    del inputs["document_ids"]
    with pytest.raises(ValueError, match="document_packing=True.*need"):
        packed(inputs)


def test_document_ids_without_packing_is_an_error():
    plain = unpacked_copy(backbone())
    inputs, _ = packed_batch()
    with pytest.raises(ValueError, match="without document_packing=True"):
        plain(inputs)
    with pytest.raises(ValueError, match="without document_packing=True"):
        plain.prefill(inputs, 4)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, LENGTH - 1), "int32"), "token_ids` has shape"),
        (np.zeros((2, LENGTH, 1), "int32"), r"\[batch, length\]"),
        (np.zeros((2, LENGTH), "float32"), "integer ids"),
    ],
)
def test_malformed_document_ids_are_errors(bad, match):
    packed = backbone()
    inputs, _ = packed_batch()
    inputs["document_ids"] = bad
    with pytest.raises(ValueError, match=match):
        packed(inputs)


def test_packing_refuses_cross_attention():
    with pytest.raises(ValueError, match="cross_attention"):
        backbone(causal=True, cross_attention=True)


def test_document_packing_must_be_a_bool():
    with pytest.raises(ValueError, match=r"document_packing='yes'"):
        backbone(document_packing="yes")


def test_document_ids_need_a_packed_cache():
    plain = unpacked_copy(backbone(causal=True, bidirectional=False))
    cache = plain.mega_layers[0].mega_layer.empty_cache(2, 8)
    x = keras.random.normal((2, 1, 16))
    with pytest.raises(ValueError, match="packed cache"):
        plain.mega_layers[0].mega_layer.call_with_cache(
            x, cache, 0, document_ids=np.zeros((2, 1), "int32")
        )


# --- Preprocessors and training on packed rows ---


def test_pack_documents_keeps_every_token():
    from keras_mega.models.mega_document_packing import pack_documents

    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14], [15, 16]]
    packed = pack_documents(docs, 4, pad_token_id=1)
    real = packed["token_ids"][packed["padding_mask"] == 1]
    np.testing.assert_array_equal(real, np.concatenate(docs))
    np.testing.assert_array_equal(
        packed["document_ids"],
        [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 1]],
    )
    # Next-token labels stay inside a document; across the cut at the
    # row end they go on (14 -> nothing: 9..14 end; 12 -> 13 across rows).
    np.testing.assert_array_equal(
        packed["next_weights"],
        [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]],
    )
    assert packed["next_ids"][1, 3] == 13


def lm_backbone(tokenizer, **kwargs):
    """The language models' one-layer packed backbone, chunks of 4."""
    return MegaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=1,
        hidden_dim=16,
        intermediate_dim=16,
        shared_dim=8,
        ema_dim=4,
        chunk_size=4,
        document_packing=True,
        **kwargs,
    )


TEXTS = [
    "the quick brown fox",
    "jumps",
    "over the lazy dog and the lazy cat sat on the mat",
    "hello world",
]


def test_causal_lm_trains_on_packed_rows(tmp_path):
    from keras_mega.models import MegaCausalLM
    from keras_mega.models import MegaCausalLMPreprocessor

    tokenizer = tiny_tokenizer(tmp_path)
    preprocessor = MegaCausalLMPreprocessor(
        tokenizer, sequence_length=8, packing=True
    )
    x, y, weights = preprocessor(TEXTS)
    document_ids = np.asarray(x["document_ids"])
    token_ids = np.asarray(x["token_ids"])
    weights = np.asarray(weights)
    # No target crosses into another document: each document's `</s>`
    # predicts nothing.
    end = token_ids == tokenizer.end_token_id
    assert (weights[end] == 0).all()
    assert end.sum() == len(TEXTS)
    assert (np.asarray(x["padding_mask"]).sum()) == sum(
        len(np.asarray(tokenizer(t))) + 2 for t in TEXTS
    )
    assert document_ids.shape == token_ids.shape
    backbone = lm_backbone(tokenizer, **CAUSAL)
    causal_lm = MegaCausalLM(backbone, preprocessor)
    assert "document_ids" in causal_lm.input
    history = causal_lm.fit(TEXTS * 2, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="makes its own labels"):
        preprocessor(TEXTS, y=np.zeros(4))


def test_masked_lm_trains_on_packed_rows(tmp_path):
    from keras_mega.models import MegaMaskedLM
    from keras_mega.models import MegaMaskedLMPreprocessor

    tokenizer = tiny_tokenizer(tmp_path)
    preprocessor = MegaMaskedLMPreprocessor(
        tokenizer, sequence_length=8, packing=True, mask_selection_length=3
    )
    x, _, _ = preprocessor(TEXTS)
    assert set(x) == {
        "token_ids",
        "padding_mask",
        "document_ids",
        "mask_positions",
    }
    assert preprocessor.get_config()["packing"] is True
    backbone = lm_backbone(tokenizer)
    masked_lm = MegaMaskedLM(backbone, preprocessor)
    history = masked_lm.fit(TEXTS * 2, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="an unknown sequence length exists only in TF graphs",
)
def test_unknown_length_in_a_tf_graph():
    import tensorflow as tf

    packed = backbone(chunk_size=CHUNK, truncation=3)
    inputs, _ = packed_batch()
    spec = {name: tf.TensorSpec((None, None), tf.int32) for name in inputs}
    graph = tf.function(lambda x: packed(x), input_signature=[spec])
    np.testing.assert_allclose(
        graph(inputs).numpy(),
        keras.ops.convert_to_numpy(packed(inputs)),
        atol=1e-5,
    )
