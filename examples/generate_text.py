"""Generate text with a Mega causal language model.

    python examples/generate_text.py [--preset DIR] [--steps N]

With `--preset` (a keras-mega preset or an HF `MegaForCausalLM` directory
with `vocab.json`/`merges.txt`), it generates from that model. Without one,
it trains a small byte-level BPE tokenizer and a small chunked causal Mega
on a short built-in text for a few seconds (`model.fit` on raw strings), so
that there is something to generate from. Then it generates with greedy
and top-k sampling (keras-hub samplers), decoding with Mega's recurrent
cache: per layer an EMA state plus one chunk of keys/values.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from example_utils import small_causal_backbone  # noqa: E402

import keras_mega  # noqa: E402

TEXT = [
    "the cat sat on the mat and the dog sat on the log.",
    "the quick brown fox jumps over the lazy dog.",
    "a moving average carries the past into the present.",
    "mega attends within chunks and remembers across them.",
] * 8


def small_model(directory, steps):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TEXT,
        vocab_size=600,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(directory)
    tokenizer = keras_mega.models.MegaTokenizer(
        vocabulary=os.path.join(directory, "vocab.json"),
        merges=os.path.join(directory, "merges.txt"),
    )
    backbone = small_causal_backbone(
        width=64,
        vocabulary_size=tokenizer.vocabulary_size(),
        ema_dim=8,
        chunk_size=8,
        dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        ffn_activation_dropout=0.0,
    )
    preprocessor = keras_mega.models.MegaCausalLMPreprocessor(
        tokenizer, sequence_length=24
    )
    # HF's head (dense + tanh before the tied projection) starts slowly from
    # scratch: a short run learns much faster without it.
    model = keras_mega.models.MegaCausalLM(
        backbone, preprocessor, use_hidden_dense=False
    )
    model.compile(optimizer=keras.optimizers.AdamW(3e-3))
    # keras-hub 0.32 does not shuffle (and warns if asked).
    model.fit(TEXT, batch_size=8, epochs=steps, shuffle=False, verbose=2)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset")
    parser.add_argument("--steps", type=int, default=40, help="training epochs")
    parser.add_argument("--max-length", type=int, default=24)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.preset:
            model = keras_mega.models.MegaCausalLM.from_preset(args.preset)
        else:
            model = small_model(tmp, args.steps)
    prompts = ["the quick brown", "the cat sat"]
    results = {}
    for sampler in ("greedy", "top_k"):
        model.compile(sampler=sampler)
        outputs = model.generate(prompts, max_length=args.max_length)
        results[sampler] = [
            text.decode() if isinstance(text, bytes) else str(text)
            for text in outputs
        ]
        for prompt, text in zip(prompts, results[sampler]):
            print(f"{sampler:>6}: {prompt!r} -> {text!r}")
    return results


if __name__ == "__main__":
    main()
