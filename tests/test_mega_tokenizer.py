"""MegaTokenizer: ids equal to HF's RoBERTa tokenizers, lossless round trip."""

import os
import random

import numpy as np
import pytest
from mega_fixtures import write_tiny_bpe

from keras_mega.models import MegaTokenizer

TRICKY = [
    "The quick brown fox",
    " leading space",
    "  two leading spaces",
    "trailing spaces  ",
    "tabs\tand\nnew\n\nlines",
    "x  \n  y\t\t z",
    "end\n",
    "\r\nwindows\r\n",
    "naïve café 東京 😀!",
    "It's 12345 I'll DON'T",
    "a\u00a0b\u2009c\u3000d",
    "$hello (world) ...!!!",
    "",
    " ",
    "\t",
    "a   b",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_bpe(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def tokenizer(files):
    return MegaTokenizer(vocabulary=files[0], merges=files[1])


def fuzz_strings(count=150, seed=0):
    rng = random.Random(seed)
    pieces = list("abcXYZ019 '\t\n.,!$(-") + [
        "  ", "\u00a0", "é", "東", "😀", "'s", "'ll", "\r\n", "   ", "fox",
        " the", "movie",
    ]  # fmt: skip
    return [
        "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        for _ in range(count)
    ]


def hf_tokenizers(files):
    transformers = pytest.importorskip("transformers")
    return [
        transformers.RobertaTokenizer(*files),
        transformers.RobertaTokenizerFast(*files),
    ]


def test_special_token_ids(tokenizer):
    assert tokenizer.start_token_id == 0
    assert tokenizer.pad_token_id == 1
    assert tokenizer.end_token_id == 2
    assert tokenizer.unk_token_id == 3
    assert tokenizer.mask_token_id == 4


def test_ids_equal_hf(files, tokenizer):
    texts = TRICKY + fuzz_strings()
    ours = tokenizer.tokenize(texts)
    for hf in hf_tokenizers(files):
        expected = hf(texts, add_special_tokens=False)["input_ids"]
        for text, a, b in zip(texts, ours, expected):
            assert list(a) == b, (type(hf).__name__, text)


def test_unbatched_and_mask_token_equal_hf(files, tokenizer):
    text = "hello <mask> world"
    for hf in hf_tokenizers(files):
        expected = hf(text, add_special_tokens=False)["input_ids"]
        assert np.asarray(tokenizer(text)).tolist() == expected


def test_tf_data_path_equals_hf(files, tokenizer):
    tf = pytest.importorskip("tensorflow")
    texts = TRICKY + fuzz_strings(60, seed=1)
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(16).map(tokenizer)
    ours = [row for batch in ds for row in batch.to_list()]
    hf = hf_tokenizers(files)[1]
    assert ours == hf(texts, add_special_tokens=False)["input_ids"]
    # Unbatched elements and a fixed `sequence_length` inside a graph too.
    fixed = MegaTokenizer(*files, sequence_length=6)
    out = next(iter(tf.data.Dataset.from_tensors(texts[0]).map(fixed)))
    expected = hf(texts[0], add_special_tokens=False)["input_ids"][:6]
    assert out.numpy().tolist() == expected + [1] * (6 - len(expected))


def test_detokenize_inverts_tokenize(tokenizer):
    texts = [t for t in TRICKY + fuzz_strings(60, seed=2)]
    ids = tokenizer.tokenize(texts)
    assert tokenizer.detokenize(ids) == texts
    for text in texts[:10]:
        assert tokenizer.detokenize(tokenizer.tokenize(text)) == text


def test_detokenize_in_tf_graph(tokenizer):
    tf = pytest.importorskip("tensorflow")
    texts = TRICKY[:9]
    roundtrip = tf.function(lambda x: tokenizer.detokenize(tokenizer(x)))
    out = roundtrip(tf.constant(texts)).numpy().tolist()
    assert [s.decode("utf-8") for s in out] == texts


def test_offsets_cover_the_text(tokenizer):
    text = "naïve café: the quick brown fox"
    (ids,), (offsets,) = tokenizer.tokenize_with_offsets([text])
    assert ids == np.asarray(tokenizer(text)).tolist()
    start = text.index("brown")
    token = [k for k, (s, e) in enumerate(offsets) if s <= start < e][0]
    assert text[offsets[token][0] :].startswith("b")


def test_config_round_trip(tokenizer):
    import keras

    config = keras.saving.serialize_keras_object(tokenizer)
    restored = keras.saving.deserialize_keras_object(config)
    restored.set_vocabulary_and_merges(tokenizer.vocabulary, tokenizer.merges)
    texts = TRICKY[:6]
    assert restored.tokenize(texts) == tokenizer.tokenize(texts)


def test_from_hf_directory(tmp_path, files):
    transformers = pytest.importorskip("transformers")
    import keras_mega  # noqa: F401  (registers the HF Mega loader)

    hf = transformers.RobertaTokenizerFast(*files)
    hf.save_pretrained(str(tmp_path))
    transformers.MegaConfig(vocab_size=400).save_pretrained(str(tmp_path))
    texts = TRICKY[:8]
    expected = hf(texts, add_special_tokens=False)["input_ids"]
    tokenizer = MegaTokenizer.from_preset(str(tmp_path))
    assert [list(r) for r in tokenizer.tokenize(texts)] == expected
    # Only tokenizer.json (the fast tokenizer's file).
    os.remove(tmp_path / "vocab.json")
    os.remove(tmp_path / "merges.txt")
    tokenizer = MegaTokenizer.from_preset(str(tmp_path))
    assert [list(r) for r in tokenizer.tokenize(texts)] == expected
