"""Rematerialization of Mega's blocks with Keras' own `keras.RematScope`.

Blocks created under `keras.RematScope("list_of_layers", layer_names=...)`
(their names: `mega_layer_{i}`) are wrapped by Keras' `remat`: JAX's
`jax.checkpoint`, TensorFlow's `tf.recompute_grad`, torch's
`torch.utils.checkpoint`. The numpy and OpenVINO backends have no remat
(Keras warns and runs the plain call): this module is skipped there.
"""

import contextlib
import re

import keras
import numpy as np
import pytest
from keras.src.backend.common import remat as keras_remat

from keras_mega.backend import nested_remat_saves_memory
from keras_mega.layers.mega_block import REMAT_LAYERS
from keras_mega.models import MegaBackbone

BACKEND = keras.config.backend()
pytestmark = pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow", "torch"),
    reason=f"Keras has no rematerialization on the {BACKEND} backend.",
)
BLOCKS = ["mega_layer_0", "mega_layer_1"]


def encoder(**kwargs):
    return MegaBackbone(
        **kwargs,
        vocabulary_size=40,
        num_layers=2,
        hidden_dim=16,
        intermediate_dim=24,
        shared_dim=8,
        ema_dim=4,
        chunk_size=4,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )


def count_calls(model):
    """Counts the calls of each block and of its nested remat units
    (`{block name}/{sublayer name}`)."""
    calls = {}

    def count(layer, name):
        call = layer.call

        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return call(*args, **kwargs)

        counted.layer_name = name
        layer.call = counted

    for block in model.mega_layers:
        count(block, block.name)
        for layer in (block.mega_layer, block.mega_layer.ema_gate, block.nffn):
            count(layer, f"{block.name}/{layer.name}")
    return calls


def loss_gradients(model, inputs):
    """Gradients of sum(output**2) w.r.t. the trainable weights, and on
    JAX the number of checkpoints in the gradient's program."""
    if BACKEND == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            y, _ = model.stateless_call(
                trainable, frozen, inputs, training=True
            )
            return (y**2).sum()

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(trainable))
        grads = jax.grad(loss)(trainable)
        # `jax.checkpoint`'s primitive ("remat" or "checkpoint" by version).
        checkpoints = len(re.findall(r"\b(?:checkpoint|remat2?)\[", jaxpr))
        return [np.asarray(g) for g in grads], checkpoints
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y = model(inputs, training=True)
            loss = tf.reduce_sum(y**2)
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in grads)
        return [np.asarray(tf.convert_to_tensor(g)) for g in grads], None
    y = model(inputs, training=True)
    (y**2).sum().backward()
    grads = [v.value.grad for v in model.trainable_variables]
    assert all(g is not None for g in grads)
    return [g.numpy().copy() for g in grads], None


NESTED = [
    f"{b}/{n}" for b in BLOCKS for n in ("mega_layer", "ema_gate", "nffn")
]


def check_remat(monkeypatch, how="blocks"):
    """`how`: "blocks", a `RematScope` over the blocks alone; "nested", one
    over the blocks and, nested in each, its gated attention (and its
    projections, gates and attention), EMA and FFN (`REMAT_LAYERS`);
    "option", `remat=True`: nested on JAX, the blocks alone elsewhere
    (`nested_remat_saves_memory`)."""
    plain = encoder()
    if how == "option":
        rematerialized = encoder(remat=True)
        option = nested_remat_saves_memory()
    else:
        option = how == "nested"
        names = BLOCKS + list(REMAT_LAYERS) * option
        with keras.RematScope("list_of_layers", layer_names=names):
            rematerialized = encoder()
    rematerialized.set_weights(plain.get_weights())
    ids = np.random.default_rng(0).integers(3, 40, (2, 12)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}

    wrapped = []
    remat = keras_remat.remat

    def spy(f):
        wrapped.append(getattr(f, "layer_name", "a part of a layer"))
        return remat(f)

    monkeypatch.setattr(keras_remat, "remat", spy)
    plain_calls = count_calls(plain)
    remat_calls = count_calls(rematerialized)

    expected, plain_checkpoints = loss_gradients(plain, inputs)
    assert not wrapped  # No remat outside the scope.
    got, checkpoints = loss_gradients(rematerialized, inputs)

    # Keras wrapped exactly the blocks (and with the option the nested
    # units: sublayers, and parts of the gated attention's call)...
    units = sorted(BLOCKS + NESTED * option + ["a part of a layer"] * option)
    assert sorted(set(wrapped)) == units
    # ...and it took effect: the backward pass ran each unit again (eager
    # TensorFlow and torch), or the JAX program holds the checkpoints.
    if BACKEND == "jax":
        assert plain_checkpoints == 0
        # One per block; with the option its four nested units in it too.
        assert checkpoints >= len(BLOCKS) * (1 + 4 * option)
        assert option or checkpoints == len(BLOCKS)
    else:
        assert set(plain_calls.values()) == {1}
        for block in BLOCKS:
            if not option:  # The block and all in it ran twice.
                assert {remat_calls[n] for n in remat_calls} == {2}
                continue
            # Each nesting level ran once more: the gated attention in the
            # block's recomputation and its own, the EMA in a third. The
            # FFN, last in the block, twice or three times (torch's
            # checkpoint stops the block's recomputation early).
            assert remat_calls[block] == 2
            assert remat_calls[f"{block}/mega_layer"] == 3
            assert remat_calls[f"{block}/ema_gate"] == 4
            assert remat_calls[f"{block}/nffn"] in (2, 3)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=0)


def test_remat_scope_gradients_equal_and_blocks_are_recomputed(monkeypatch):
    """On JAX, `MegaBlock.rematerialized_call` keeps the block's Python
    arguments (`training`, `None` inputs) out of `jax.checkpoint`."""
    check_remat(monkeypatch)


def test_nested_remat_scope_gradients_equal_on_every_backend(monkeypatch):
    check_remat(monkeypatch, "nested")


def test_remat_option_nests_where_it_saves_memory(monkeypatch):
    """`remat=True` nests on JAX only (where it saves memory)."""
    assert nested_remat_saves_memory() == (BACKEND == "jax")
    check_remat(monkeypatch, "option")
    config = encoder(remat=True).get_config()
    assert config["remat"] is True
    assert MegaBackbone.from_config(config).remat is True
    # A string is not a flag ("false" would be truthy).
    with pytest.raises(ValueError, match=r"remat='false'"):
        encoder(remat="false")


@pytest.mark.skipif(
    BACKEND == "jax",
    reason='On JAX "larger_than" also wraps the backbone model, whose '
    '`training` argument `jax.checkpoint` then traces (as with "full").',
)
def test_other_remat_scope_modes_leave_the_parts_alone():
    """Keras' "larger_than" mode decides per call from the output size; the
    gated attention's parts (`rematerialized_part`) are nested units only
    when the whole layer is rematerialized, so they are not asked."""
    plain = encoder()
    with keras.RematScope("larger_than", output_size_threshold=10):
        rematerialized = encoder()
    rematerialized.set_weights(plain.get_weights())
    ids = np.random.default_rng(0).integers(3, 40, (2, 12)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    expected, _ = loss_gradients(plain, inputs)
    got, _ = loss_gradients(rematerialized, inputs)
    for g, e in zip(got, expected):
        # Some gradients are ~7: float32 rounding of a recomputation in
        # another order reaches 1.4e-6 there (2e-7 relative, TensorFlow).
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=1e-6)


def test_remat_gradients_equal_with_packed_documents():
    """The packed path (document masks, the EMA restarting at boundaries)
    through the nested units: `document_ids` is a tensor argument of the
    attention unit and of the EMA."""
    options = dict(document_packing=True, causal=True, bidirectional=False)
    plain = encoder(**options)
    nested = keras.RematScope(
        "list_of_layers", layer_names=BLOCKS + list(REMAT_LAYERS)
    )
    with nested:
        rematerialized = encoder(**options)
    rematerialized.set_weights(plain.get_weights())
    ids = np.random.default_rng(0).integers(3, 40, (2, 12)).astype("int32")
    documents = np.array([[0] * 5 + [1] * 7, [0] * 3 + [1] + [2] * 8])
    inputs = {
        "token_ids": ids,
        "padding_mask": np.ones_like(ids),
        "document_ids": documents.astype("int32"),
    }
    expected, _ = loss_gradients(plain, inputs)
    got, checkpoints = loss_gradients(rematerialized, inputs)
    assert checkpoints is None or checkpoints > 0
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=0)


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's compiled memory, JAX")
def test_remat_saves_memory_in_the_compiled_jax_step():
    """The compiled gradient's temporary memory, from XLA itself. On the CPU
    backend XLA would delete `jax.checkpoint`'s barriers and merge the
    recomputation into the forward (the same memory with remat as without)
    unless keras_mega disabled that pass (`keras_mega.backend`)."""
    import jax

    from keras_mega import backend

    def temp_bytes(remat, scope=None):
        with scope or contextlib.nullcontext():
            model = MegaBackbone(
                vocabulary_size=40,
                num_layers=3,
                hidden_dim=16,
                intermediate_dim=32,
                shared_dim=8,
                ema_dim=4,
                chunk_size=64,
                dropout=0.0,  # Dropout's random bits double the compile time.
                hidden_dropout=0.0,
                attention_dropout=0.0,
                ffn_activation_dropout=0.0,
                remat=remat,
            )
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        ids = jax.numpy.ones((1, 1024), "int32")
        inputs = {"token_ids": ids, "padding_mask": ids}

        def loss(trainable):
            y, _ = model.stateless_call(
                trainable, frozen, inputs, training=True
            )
            return (y**2).sum()

        compiled = jax.jit(jax.grad(loss)).lower(trainable).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert backend.remat_problem() is None
    plain, rematerialized = temp_bytes(False), temp_bytes(True)
    blocks = keras.RematScope(
        "list_of_layers", layer_names=[f"mega_layer_{i}" for i in range(3)]
    )
    blocks_only = temp_bytes(False, blocks)
    # The blocks alone: about one block's activations instead of three,
    # plus the saved block inputs (measured: 0.36x; 1.01x with the pass
    # left on).
    assert blocks_only < plain / 2, (plain, blocks_only)
    # Nested remat: of that block, one unit's activations at a time
    # (measured: 0.65x).
    assert rematerialized < 0.8 * blocks_only, (blocks_only, rematerialized)


def test_compiled_training_step_with_remat_equals_without():
    """`fit`'s compiled step (XLA on JAX and TensorFlow): TensorFlow's
    `tf.recompute_grad` takes no keyword arguments in graph mode, so the
    block passes its tensors positionally."""
    plain, rematerialized = encoder(), encoder(remat=True)
    rematerialized.set_weights(plain.get_weights())
    ids = np.random.default_rng(0).integers(3, 40, (2, 12)).astype("int32")
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    target = np.random.default_rng(1).normal(size=(2, 12, 16))
    losses = []
    for model in (plain, rematerialized):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss="mse",
            jit_compile=BACKEND != "torch",
        )
        losses.append([model.train_on_batch(inputs, target) for _ in "12"])
    np.testing.assert_allclose(losses[1], losses[0], atol=1e-6, rtol=0)
    for got, expected in zip(rematerialized.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
