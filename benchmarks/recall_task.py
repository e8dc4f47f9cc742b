"""The long-range recall probe, shared by the ladder and its CI test.

A causal model sees a class token (one of `NUM_CLASSES` ids, none of them a
special token) at position 0, then `length - 1` random filler tokens, and
must name the class at the last position. Chance is 1 / NUM_CLASSES; only
information carried from position 0 to the end solves it. With chunked
attention the last chunk cannot attend to position 0, so the EMA has to
carry the class across every chunk boundary.

Data is generated on the fly (a fresh batch every step); the validation set
is fixed by its seed. Keras and the HF reference use the same generator,
the same validation set and the same `accuracy()`.
"""

import time

import numpy as np

NUM_CLASSES = 10
VOCAB_SIZE = 64
FIRST_CLASS_ID = 3  # ids 0, 1, 2 are bos, pad, eos
FIRST_FILLER_ID = FIRST_CLASS_ID + NUM_CLASSES  # fillers: 13 .. 63
TARGET = 0.95
# The ladder's small model (issue 8): `mega_options(64, 2, ...)`.
MODEL = dict(
    num_layers=2,
    hidden_dim=64,
    intermediate_dim=128,
    shared_dim=32,
    ema_dim=16,
)
TRAIN = dict(batch_size=32, learning_rate=2e-3, weight_decay=0.01)
CHUNK_FOR_LENGTH = {128: 32, 512: 64, 2048: 128}


def make_batch(rng, batch_size, length):
    """Returns `(token_ids [B, L] int32, labels [B] int32)`."""
    labels = rng.integers(0, NUM_CLASSES, size=batch_size)
    ids = rng.integers(FIRST_FILLER_ID, VOCAB_SIZE, size=(batch_size, length))
    ids[:, 0] = FIRST_CLASS_ID + labels
    return ids.astype("int32"), labels.astype("int32")


def validation_set(length, size=256, seed=12345):
    return make_batch(np.random.default_rng(seed), size, length)


def accuracy(predict_logits, ids, labels, batch_size=64):
    """Accuracy of `predict_logits(ids_batch) -> [b, ..., classes]` against
    `labels [B, ...]`; `ids` is an array or a dict of arrays, batched alike."""
    correct = 0
    for start in range(0, len(labels), batch_size):
        batch = slice(start, start + batch_size)
        if isinstance(ids, dict):
            inputs = {name: value[batch] for name, value in ids.items()}
        else:
            inputs = ids[batch]
        logits = np.asarray(predict_logits(inputs))
        correct += int((logits.argmax(-1) == labels[batch]).sum())
    return correct / labels.size


# === Keras ===


def mega_options(width, num_layers, vocab_size, max_len, **overrides):
    """`MegaBackbone` options of the benchmarks' Mega: hidden `width`,
    intermediate and FFN 2 * width, shared width / 2, EMA 16, LayerNorm
    pre-norm, softmax, no dropout."""
    options = dict(
        vocabulary_size=vocab_size,
        num_layers=num_layers,
        hidden_dim=width,
        intermediate_dim=2 * width,
        shared_dim=width // 2,
        ema_dim=16,
        ffn_dim=2 * width,
        normalization_type="layernorm",
        attention_activation="softmax",
        max_sequence_length=max(max_len, 2048),
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )
    options.update(overrides)
    return options


def build_keras_model(length, chunk_size=None, ema_init="paper", **overrides):
    """`MegaBackbone` (causal, LayerNorm pre-norm) + Dense on the last token."""
    import keras

    from keras_mega.models import MegaBackbone

    options = mega_options(
        MODEL["hidden_dim"],
        MODEL["num_layers"],
        VOCAB_SIZE,
        length,
        bidirectional=False,
        causal=True,
        chunk_size=chunk_size,
        ema_init=ema_init,
        **overrides,
    )
    backbone = MegaBackbone(**options)
    token_ids = keras.Input(shape=(length,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(
        shape=(length,), dtype="int32", name="padding_mask"
    )
    x = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    logits = keras.layers.Dense(NUM_CLASSES, name="head")(x[:, -1, :])
    return keras.Model([token_ids, padding_mask], logits)


def _inputs(ids):
    return (ids, np.ones_like(ids))


def train_keras(
    length,
    chunk_size=None,
    ema_init="paper",
    seed=0,
    steps=1000,
    eval_every=25,
    early_stop=True,
    log=print,
    **overrides,
):
    """Trains with `model.fit` on fresh batches; returns a result dict.

    Validation accuracy is measured every `eval_every` steps;
    `steps_to_95` is the first such step at which it reaches `TARGET`
    (None if it never does within `steps`). With `early_stop`, training
    stops there and `final_accuracy` is that accuracy.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = build_keras_model(length, chunk_size, ema_init, **overrides)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            TRAIN["learning_rate"], weight_decay=TRAIN["weight_decay"]
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(seed + 1000)

    def batches():
        while True:
            ids, labels = make_batch(rng, TRAIN["batch_size"], length)
            yield _inputs(ids), labels

    val_ids, val_labels = validation_set(length)
    history = []
    state = {"steps_to_95": None, "t0": time.time()}

    class Monitor(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            step = (epoch + 1) * eval_every
            acc = accuracy(
                lambda ids: self.model.predict_on_batch(_inputs(ids)),
                val_ids,
                val_labels,
            )
            history.append((step, acc))
            log(
                f"  step {step:5d} loss {logs['loss']:.4f} val_acc {acc:.3f}"
                f" ({time.time() - state['t0']:.0f}s)"
            )
            if acc >= TARGET and state["steps_to_95"] is None:
                state["steps_to_95"] = step
                if early_stop:
                    self.model.stop_training = True

    model.fit(
        batches(),
        steps_per_epoch=eval_every,
        epochs=max(1, steps // eval_every),
        callbacks=[Monitor()],
        verbose=0,
    )
    return {
        "steps_to_95": state["steps_to_95"],
        "final_accuracy": history[-1][1],
        "steps_run": history[-1][0],
        "seconds": round(time.time() - state["t0"], 1),
        "history": history,
    }


# === HF reference (transformers < 5, torch) ===


def build_hf_model(length, chunk_size=None):
    """HF `MegaModel` (decoder, causal EMA) + a linear head, last token."""
    import torch
    from transformers import MegaConfig
    from transformers import MegaModel

    config = MegaConfig(
        vocab_size=VOCAB_SIZE,
        num_hidden_layers=MODEL["num_layers"],
        hidden_size=MODEL["hidden_dim"],
        intermediate_size=MODEL["intermediate_dim"],
        shared_representation_size=MODEL["shared_dim"],
        ema_projection_size=MODEL["ema_dim"],
        nffn_hidden_size=MODEL["intermediate_dim"],
        is_decoder=True,
        bidirectional=False,
        use_chunking=chunk_size is not None,
        chunk_size=chunk_size or -1,
        normalization_type="layernorm",
        attention_activation="softmax",
        max_positions=max(length, 2048),
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        use_cache=False,
    )

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mega = MegaModel(config, add_pooling_layer=False)
            self.head = torch.nn.Linear(config.hidden_size, NUM_CLASSES)

        def forward(self, ids):
            mask = torch.ones_like(ids)
            hidden = self.mega(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).last_hidden_state
            return self.head(hidden[:, -1])

    return Classifier()


def train_hf(
    length,
    chunk_size=None,
    seed=0,
    steps=1000,
    eval_every=25,
    early_stop=True,
    log=print,
):
    """The same loop for the HF reference, with torch AdamW."""
    import torch

    torch.manual_seed(seed)
    model = build_hf_model(length, chunk_size)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=TRAIN["learning_rate"],
        weight_decay=TRAIN["weight_decay"],
    )
    rng = np.random.default_rng(seed + 1000)
    val_ids, val_labels = validation_set(length)

    def predict(ids):
        model.eval()
        with torch.no_grad():
            out = model(torch.tensor(ids, dtype=torch.long)).numpy()
        model.train()
        return out

    history, steps_to_95, t0 = [], None, time.time()
    model.train()
    for step in range(1, steps + 1):
        ids, labels = make_batch(rng, TRAIN["batch_size"], length)
        loss = torch.nn.functional.cross_entropy(
            model(torch.tensor(ids, dtype=torch.long)),
            torch.tensor(labels, dtype=torch.long),
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % eval_every:
            continue
        acc = accuracy(predict, val_ids, val_labels)
        history.append((step, acc))
        log(
            f"  step {step:5d} loss {loss.item():.4f} val_acc {acc:.3f}"
            f" ({time.time() - t0:.0f}s)"
        )
        if acc >= TARGET and steps_to_95 is None:
            steps_to_95 = step
            if early_stop:
                break
    return {
        "steps_to_95": steps_to_95,
        "final_accuracy": history[-1][1],
        "steps_run": history[-1][0],
        "seconds": round(time.time() - t0, 1),
        "history": history,
    }
