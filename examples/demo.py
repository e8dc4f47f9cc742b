"""keras-mega demo: train a chunked Mega classifier on a long-range task.

Each example is a sequence of random filler tokens with one class token
hidden somewhere in its last quarter; the classifier reads the first token
(`<s>`), as HF's classification head does. Attention only sees chunks of
32 tokens, so the answer has to travel back across many chunk boundaries
through the bidirectional EMA. The model trains with `model.fit` (Keras'
progress bar), reports validation accuracy, saves itself as a preset,
reloads it and checks that the reloaded model gives the same predictions.

    KERAS_BACKEND=jax python examples/demo.py [--quick | --smoke] [--out DIR]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mega  # noqa: E402

CLASSES = 4
FIRST_CLASS_ID = 5  # ids 0-4 are <s>, <pad>, </s>, <unk>, <mask>
VOCABULARY = 64


def make_data(count, length, seed):
    """Filler tokens, `<s>` first, one class token in the second half."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(FIRST_CLASS_ID + CLASSES, VOCABULARY, (count, length))
    ids[:, 0] = 0
    labels = rng.integers(0, CLASSES, count)
    where = rng.integers(length // 2, length, count)
    ids[np.arange(count), where] = FIRST_CLASS_ID + labels
    inputs = {
        "token_ids": ids.astype("int32"),
        "padding_mask": np.ones_like(ids, "int32"),
    }
    return inputs, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a shorter run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: checks it runs, not that it learns",
    )
    parser.add_argument(
        "--out", help="where to save the preset (default: a temp dir)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="initialization seed"
    )
    args = parser.parse_args(argv)
    # Measured on 2 CPU cores (JAX), before the initialization fix
    # (independent draws per weight): 100% after 5 epochs (~2 min). Since the
    # fix, seeds 0, 1 and 2 stay at 30.9% after 5 epochs: this run is fragile
    # to the initial draw (open). At 256 tokens, 600 steps did not leave the
    # chance plateau.
    length, train_size, epochs = (128, 4800, 5)
    if args.quick:
        length, train_size, epochs = 128, 4800, 3
    if args.smoke:
        length, train_size, epochs = 64, 64, 1
    keras.utils.set_random_seed(args.seed)

    x_train, y_train = make_data(train_size, length, seed=0)
    x_val, y_val = make_data(256, length, seed=1)
    backbone = keras_mega.models.MegaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=2,
        hidden_dim=64,
        intermediate_dim=128,
        shared_dim=32,
        ema_dim=16,
        chunk_size=32,
        bidirectional=True,
        ema_init="timescales",
        ema_max_timescale=2 * length,
        # HF's init (0.02) makes the classification head (dense + tanh +
        # projection) start very slowly from scratch; 0.1 trains in minutes.
        initializer_range=0.1,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )
    classifier = keras_mega.models.MegaTextClassifier(
        backbone, num_classes=CLASSES, preprocessor=None, dropout=0.0
    )
    classifier.compile(
        optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.01)
    )
    print(
        f"keras-mega {keras_mega.__version__} on {keras.backend.backend()}: "
        f"{classifier.count_params():,} parameters, sequences of {length} "
        f"tokens in chunks of 32, {CLASSES} classes (chance "
        f"{1 / CLASSES:.0%})"
    )
    start = time.time()
    classifier.fit(
        x_train,
        y_train,
        batch_size=32,
        epochs=epochs,
        validation_data=(x_val, y_val),
    )
    logits = classifier.predict(x_val, batch_size=64, verbose=0)
    accuracy = float((logits.argmax(-1) == y_val).mean())
    print(
        f"validation accuracy {accuracy:.1%} after {time.time() - start:.0f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        preset = args.out or os.path.join(tmp, "mega_demo_classifier")
        classifier.save_to_preset(preset)
        reloaded = keras_mega.models.MegaTextClassifier.from_preset(
            preset, preprocessor=None
        )
        again = reloaded.predict(x_val, batch_size=64, verbose=0)
    difference = float(np.abs(again - logits).max())
    agrees = difference == 0.0
    print(
        f"saved to {preset!r} and reloaded: "
        + (
            "the reloaded model agrees exactly"
            if agrees
            else f"max difference {difference:.2e}"
        )
    )
    return 0 if agrees else 1


if __name__ == "__main__":
    raise SystemExit(main())
