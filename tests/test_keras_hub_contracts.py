"""keras-hub's contracts, checked with keras-hub's own `TestCase` helpers.

`run_backbone_test` (serialization, variable lengths, compiled predict,
precision with float16/bfloat16 policies, int8/float8 quantization) for the
backbone and `run_task_test` (predict and fit on raw strings, through
`tf.data`, split preprocessing, no `compile`) for every task; then what the
helpers do not check: dtype through `from_preset`, LoRA and quantization
numbers.
"""

import os

import keras
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("grain")
from keras_hub.src.tests import test_case  # noqa: E402
from mega_fixtures import NO_DROPOUT  # noqa: E402
from mega_fixtures import tiny_tokenizer  # noqa: E402

from keras_mega.models import MegaBackbone  # noqa: E402
from keras_mega.models import MegaCausalLM  # noqa: E402
from keras_mega.models import MegaCausalLMPreprocessor  # noqa: E402
from keras_mega.models import MegaMaskedLM  # noqa: E402
from keras_mega.models import MegaMaskedLMPreprocessor  # noqa: E402
from keras_mega.models import MegaMultipleChoice  # noqa: E402
from keras_mega.models import MegaMultipleChoicePreprocessor  # noqa: E402
from keras_mega.models import MegaQuestionAnswerer  # noqa: E402
from keras_mega.models import MegaQuestionAnswererPreprocessor  # noqa: E402
from keras_mega.models import MegaTextClassifier  # noqa: E402
from keras_mega.models import MegaTextClassifierPreprocessor  # noqa: E402
from keras_mega.models import MegaTokenClassifier  # noqa: E402
from keras_mega.models import MegaTokenClassifierPreprocessor  # noqa: E402

TINY = dict(
    vocabulary_size=40, num_layers=2, hidden_dim=16, intermediate_dim=24,
    shared_dim=8, ema_dim=4, ffn_dim=20, **NO_DROPOUT,
)  # fmt: skip
BACKBONES = {
    "chunked_encoder": dict(chunk_size=4),
    "cross_attention_decoder": dict(
        causal=True, cross_attention=True, attention_activation="laplace",
        relative_position_bias="simple", max_sequence_length=8,
        normalization_type="layernorm",
    ),
}  # fmt: skip
# The compiles of these tests are most of their time (conftest).
pytestmark = pytest.mark.usefixtures("quick_jax_compiles")


def backbone_inputs(config, batch=2, length=5, seed=0):
    rng = np.random.default_rng(seed)
    data = {
        "token_ids": rng.integers(3, 40, (batch, length)).astype("int32"),
        "padding_mask": np.ones((batch, length), "int32"),
    }
    data["padding_mask"][-1, -2:] = 0
    if config.get("cross_attention"):
        data["encoder_sequence_output"] = rng.normal(
            size=(batch, 3, 16)
        ).astype("float32")
        data["encoder_padding_mask"] = np.ones((batch, 3), "int32")
    return data


@pytest.mark.parametrize("name", BACKBONES)
def test_keras_hub_backbone_test(name):
    config = {**TINY, **BACKBONES[name]}
    data = backbone_inputs(config)
    case = test_case.TestCase()
    case.run_backbone_test(
        cls=MegaBackbone,
        init_kwargs=config,
        input_data=data,
        expected_output_shape=(2, 5, 16),
        # Variable lengths: keras-hub's default slices every input's second
        # axis, the encoder output's too, which is fine.
    )


def make_task(name, tokenizer):
    """`(cls, init_kwargs, train_data)` for keras-hub's `run_task_test`."""
    backbone = dict(
        TINY, num_layers=1, vocabulary_size=tokenizer.vocabulary_size()
    )
    texts = ["good movie", "bad film", "a good film", "a bad movie"]
    if name == "masked_lm":
        # Deterministic masking, as keras-hub's own masked LM tests: the
        # helper compares predictions of separate calls.
        preprocessor = MegaMaskedLMPreprocessor(
            tokenizer,
            sequence_length=8,
            mask_selection_rate=1.0,
            mask_token_rate=1.0,
            random_token_rate=0.0,
            mask_selection_length=8,
        )
        return (
            MegaMaskedLM,
            dict(backbone=MegaBackbone(**backbone), preprocessor=preprocessor),
            (texts,),
        )
    if name == "causal_lm":
        preprocessor = MegaCausalLMPreprocessor(tokenizer, sequence_length=8)
        return (
            MegaCausalLM,
            dict(
                backbone=MegaBackbone(**backbone, causal=True),
                preprocessor=preprocessor,
            ),
            (texts,),
        )
    if name == "text_classifier":
        preprocessor = MegaTextClassifierPreprocessor(
            tokenizer, sequence_length=8
        )
        return (
            MegaTextClassifier,
            dict(
                backbone=MegaBackbone(**backbone),
                preprocessor=preprocessor,
                num_classes=2,
            ),
            (texts, np.array([1, 0, 1, 0])),
        )
    if name == "token_classifier":
        preprocessor = MegaTokenClassifierPreprocessor(
            tokenizer, sequence_length=8
        )
        labels = np.array([[1, 2, -1], [2, 1, -1], [0, 1, 2], [0, 2, 1]])
        return (
            MegaTokenClassifier,
            dict(
                backbone=MegaBackbone(**backbone),
                preprocessor=preprocessor,
                num_classes=3,
            ),
            (texts, labels),
        )
    if name == "multiple_choice":
        preprocessor = MegaMultipleChoicePreprocessor(
            tokenizer, sequence_length=8
        )
        prompts = np.array(["good", "bad", "a", "the"])
        choices = np.array(
            [["movie", "film"], ["film", "movie"], ["cat", "dog"], ["a", "b"]]
        )
        return (
            MegaMultipleChoice,
            dict(backbone=MegaBackbone(**backbone), preprocessor=preprocessor),
            ((prompts, choices), np.array([0, 1, 0, 1])),
        )
    if name == "question_answerer":
        preprocessor = MegaQuestionAnswererPreprocessor(
            tokenizer, sequence_length=16
        )
        contexts = ["john lives in paris", "a cat sat", "the fox", "a movie"]
        answers = ["paris", "cat", "fox", "movie"]
        spans = np.array(
            [
                [c.index(a), c.index(a) + len(a)]
                for c, a in zip(contexts, answers)
            ]
        )
        questions = np.array(["where", "who sat", "what", "what"])
        return (
            MegaQuestionAnswerer,
            dict(backbone=MegaBackbone(**backbone), preprocessor=preprocessor),
            ((questions, np.array(contexts)), spans),
        )
    raise ValueError(name)


TASKS = [
    "masked_lm",
    "causal_lm",
    "text_classifier",
    "token_classifier",
    "multiple_choice",
    "question_answerer",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("bpe"))


@pytest.mark.parametrize("name", TASKS)
def test_keras_hub_task_test(name, tokenizer):
    cls, init_kwargs, train_data = make_task(name, tokenizer)
    test_case.TestCase().run_task_test(
        cls=cls, init_kwargs=init_kwargs, train_data=train_data, batch_size=2
    )


# --- dtype ---


@pytest.mark.parametrize("policy", ["bfloat16", "float16", "mixed_bfloat16"])
def test_dtype_policy_reaches_every_layer(policy, tmp_path):
    if keras.config.backend() == "torch" and policy == "float16":
        pytest.skip("torch CPU has no float16 matmul")
    config = dict(TINY, chunk_size=4)
    data = backbone_inputs(config)
    reference = MegaBackbone(**config)
    expected = keras.ops.convert_to_numpy(reference(data))
    reference.save_to_preset(str(tmp_path))
    policy = keras.DTypePolicy(policy)
    for backbone in (
        MegaBackbone(**config, dtype=policy.name),
        MegaBackbone.from_preset(str(tmp_path), dtype=policy.name),
    ):
        out = backbone(data)
        assert (
            keras.backend.standardize_dtype(out.dtype) == policy.compute_dtype
        )
        for layer in backbone._flatten_layers():
            if isinstance(layer, keras.layers.InputLayer):
                continue
            assert layer.compute_dtype == policy.compute_dtype, layer.path
        for weight in backbone.weights:
            assert weight.dtype == policy.variable_dtype, weight.path
    # The preset's weights, cast: the low-precision output stays close.
    got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.05 * scale


def test_ema_stays_float32_under_bfloat16():
    from keras_mega.layers import MegaEMA

    ema = MegaEMA(16, ema_dim=4, dtype="bfloat16")
    x = keras.random.normal((2, 12, 16), dtype="bfloat16")
    y = ema(x)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    for coefficient in ema.coefficients():
        assert keras.backend.standardize_dtype(coefficient.dtype) == "float32"
    assert keras.backend.standardize_dtype(ema.kernel(12).dtype) == "float32"


# --- Constructor arguments ---


def test_unknown_argument_names_the_closest_one():
    with pytest.raises(
        TypeError, match="'hiden_dim' \\(did you mean 'hidden_dim'\\?\\)"
    ):
        MegaBackbone(**TINY, hiden_dim=5)
    with pytest.raises(TypeError, match="flash_attention"):
        MegaBackbone(**TINY, flash_attention=True)  # not an option
    # Keras' own arguments still pass.
    backbone = MegaBackbone(**TINY, name="mega", trainable=False)
    assert backbone.name == "mega" and not backbone.trainable


def test_causal_backbone_has_a_causal_ema_by_default():
    backbone = MegaBackbone(**TINY, causal=True)
    assert backbone.bidirectional is False
    data = backbone_inputs(TINY, batch=1, length=8)
    data["padding_mask"][:] = 1
    changed = {k: v.copy() for k, v in data.items()}
    changed["token_ids"][0, 5:] = 7
    a = keras.ops.convert_to_numpy(backbone(data))
    b = keras.ops.convert_to_numpy(backbone(changed))
    # No position before 5 may see the changed future tokens.
    np.testing.assert_array_equal(a[0, :5], b[0, :5])
    assert not np.allclose(a[0, 5:], b[0, 5:])
    # An explicit bidirectional EMA in a causal model (HF allows it) is
    # still possible, and reads the future.
    leaky = MegaBackbone(**TINY, causal=True, bidirectional=True)
    a = keras.ops.convert_to_numpy(leaky(data))
    b = keras.ops.convert_to_numpy(leaky(changed))
    assert not np.allclose(a[0, :5], b[0, :5])
    assert MegaBackbone(**TINY).bidirectional is True


# --- LoRA ---


def trainable_paths(model):
    return sorted(w.path for w in model.trainable_weights)


def test_enable_lora_targets_mega_projections(tmp_path):
    backbone = MegaBackbone(**TINY, chunk_size=4)
    data = backbone_inputs(TINY)
    before = keras.ops.convert_to_numpy(backbone(data))
    base_weights = backbone.get_weights()
    assert backbone.default_lora_layer_names() == [
        "v_proj", "mx_proj", "h_proj", "fc1", "fc2",
    ]  # fmt: skip
    backbone.enable_lora(2)
    paths = trainable_paths(backbone)
    # 5 projections x 2 layers x (lora_kernel_a, lora_kernel_b), and the
    # biases of those projections (Keras' Dense keeps its bias trainable).
    lora = [p for p in paths if "lora_kernel" in p]
    assert len(lora) == 20
    assert all(
        p.endswith(("lora_kernel_a", "lora_kernel_b", "bias")) for p in paths
    )
    after = keras.ops.convert_to_numpy(backbone(data))
    np.testing.assert_array_equal(before, after)

    # Adapters round-trip through save_lora_weights / load_lora_weights.
    for weight in backbone.trainable_weights:
        if "lora_kernel_b" in weight.path:
            weight.assign(keras.random.normal(weight.shape, seed=1) * 0.1)
    changed = keras.ops.convert_to_numpy(backbone(data))
    assert not np.allclose(changed, before)
    path = str(tmp_path / "adapters.lora.h5")
    backbone.save_lora_weights(path)
    # The same base weights, then the saved adapters: the same outputs.
    fresh = MegaBackbone(**TINY, chunk_size=4)
    fresh.set_weights(base_weights)
    fresh.load_lora_weights(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fresh(data)), changed
    )


def test_enable_lora_refuses_targets_that_match_nothing():
    backbone = MegaBackbone(**TINY)
    with pytest.raises(ValueError, match="query_dense.*Layers that can"):
        backbone.enable_lora(2, target_layer_names=["query_dense"])
    with pytest.raises(ValueError, match="cannot take LoRA"):
        backbone.enable_lora(2, target_layer_names=["norm"])
    without_ffn = MegaBackbone(**TINY, use_normalized_ffn=False)
    assert without_ffn.default_lora_layer_names() == [
        "v_proj", "mx_proj", "h_proj",
    ]  # fmt: skip


def test_lora_fine_tuning_trains_only_adapters_and_head(tmp_path, tokenizer):
    from mega_fixtures import make_hf_model

    make_hf_model(
        tmp_path, cls="MegaForSequenceClassification", num_labels=2,
        vocab_size=tokenizer.vocabulary_size(),
    )  # fmt: skip
    classifier = MegaTextClassifier.from_preset(
        str(tmp_path), preprocessor=None
    )
    classifier.backbone.enable_lora(4)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2))
    frozen = {
        w.path: keras.ops.convert_to_numpy(w)
        for w in classifier.weights
        if not w.trainable
    }
    trainable = trainable_paths(classifier)
    assert all(
        "lora_kernel" in p or p.endswith("bias") or "pooled_dense" in p
        or "logits" in p
        for p in trainable
    ), trainable  # fmt: skip
    assert any("pooled_dense" in p for p in trainable)
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(3, 30, (16, 8)).astype("int32"),
        "padding_mask": np.ones((16, 8), "int32"),
    }
    y = (x["token_ids"][:, 1] > 16).astype("int32")
    history = classifier.fit(x, y, epochs=8, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses
    for weight in classifier.weights:
        if weight.path in frozen:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(weight), frozen[weight.path]
            )


# --- Quantization ---


@pytest.mark.parametrize("mode", ["int8", "float8"])
def test_quantize_covers_every_projection(mode, tmp_path, recwarn):
    if keras.config.backend() == "torch" and mode == "float8":
        pytest.skip("Keras' float8 quantization runs on JAX and TensorFlow")
    config = dict(TINY, chunk_size=4)
    data = backbone_inputs(config)
    backbone = MegaBackbone(**config)
    expected = keras.ops.convert_to_numpy(backbone(data))
    float_dir = tmp_path / "float"
    backbone.save_to_preset(str(float_dir))
    backbone.quantize(mode)
    assert not [
        str(w.message) for w in recwarn.list if "quantize" in str(w.message)
    ]
    dense = [
        layer for layer in backbone._flatten_layers()
        if isinstance(layer, keras.layers.Dense)
    ]  # fmt: skip
    assert len(dense) == 10
    assert all(layer.quantization_mode == mode for layer in dense)
    if mode == "int8":
        assert backbone.token_embedding.quantization_mode == "int8"
    got = keras.ops.convert_to_numpy(backbone(data))
    # Stated tolerances (README): int8 within 5% of the output's scale,
    # float8 (e4m3, 3 mantissa bits) within 15%.
    tolerance = {"int8": 0.05, "float8": 0.15}[mode]
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < tolerance * scale
    assert not np.array_equal(got, expected)
    # A quantized preset saves and loads bit-exactly.
    quantized_dir = tmp_path / "quantized"
    backbone.save_to_preset(str(quantized_dir))
    reloaded = MegaBackbone.from_preset(str(quantized_dir))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(data)), got
    )
    with pytest.raises(ValueError, match="quantized weights"):
        MegaBackbone.from_preset(str(quantized_dir), dtype="bfloat16")
    if mode == "int8":
        size = os.path.getsize
        assert size(quantized_dir / "model.weights.h5") < size(
            float_dir / "model.weights.h5"
        )


def test_generate_on_an_int8_causal_lm():
    backbone = MegaBackbone(**TINY, causal=True, chunk_size=4)
    causal_lm = MegaCausalLM(backbone)
    ids = np.array([[0, 5, 9, 11, 1, 1, 1, 1]] * 2, "int32")
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0]] * 2, "int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    expected = keras.ops.convert_to_numpy(causal_lm(inputs))
    causal_lm.quantize("int8")
    logits = keras.ops.convert_to_numpy(causal_lm(inputs))
    # The tied head reads the dequantized int8 table: logits stay close.
    scale = np.abs(expected).max()
    assert np.abs(logits - expected).max() < 0.05 * scale
    out = causal_lm.generate(
        {"token_ids": ids, "padding_mask": mask}, stop_token_ids=None
    )
    out = keras.ops.convert_to_numpy(out["token_ids"])
    assert out.shape == (2, 8)
    np.testing.assert_array_equal(out[:, :4], ids[:, :4])
    assert (out >= 0).all() and (out < TINY["vocabulary_size"]).all()


def test_gptq_quantizes_every_block(tokenizer):
    """keras-hub's GPTQ path (`get_quantization_layer_structure`: the token
    embedding, then `backbone.transformer_layers` one by one) runs on a
    Mega causal LM and quantizes every projection of every block."""
    backbone = MegaBackbone(
        **dict(TINY, vocabulary_size=tokenizer.vocabulary_size()),
        causal=True,
        chunk_size=4,
    )
    preprocessor = MegaCausalLMPreprocessor(tokenizer, sequence_length=8)
    causal_lm = MegaCausalLM(backbone, preprocessor)
    texts = ["good movie", "bad film", "a good film", "a bad movie"]
    inputs = preprocessor.generate_preprocess(texts, sequence_length=8)
    expected = keras.ops.convert_to_numpy(backbone(inputs))
    config = keras.quantizers.GPTQConfig(
        dataset=texts, tokenizer=tokenizer, weight_bits=4, num_samples=4,
        sequence_length=8, group_size=-1,
    )  # fmt: skip
    causal_lm.quantize("gptq", config=config)
    dense = [
        layer for block in backbone.transformer_layers
        for layer in block._flatten_layers()
        if isinstance(layer, keras.layers.Dense)
    ]  # fmt: skip
    assert len(dense) == 10  # 5 projections x 2 blocks
    assert {layer.quantization_mode for layer in dense} == {"gptq"}
    got = keras.ops.convert_to_numpy(backbone(inputs))
    assert not np.array_equal(got, expected)
    # 4-bit weights on a random tiny model: within 25% of the output scale
    # (measured 14% on a 2-layer, 32-wide one).
    assert np.abs(got - expected).max() < 0.25 * np.abs(expected).max()
    out = causal_lm.generate(["good"], max_length=8)
    assert isinstance(out, list) and out[0].startswith("good")
