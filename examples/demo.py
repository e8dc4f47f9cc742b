"""keras-mega demo: load a Hugging Face Mega checkpoint and compare with HF.

Builds a tiny HF Mega checkpoint locally (no download), loads it with
keras-mega on the current Keras backend (KERAS_BACKEND), and prints the
largest difference to HF's output.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import keras_mega  # noqa: E402


def main():
    torch.manual_seed(0)
    config = transformers.MegaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        nffn_hidden_size=64,
        shared_representation_size=16,
        ema_projection_size=8,
        use_chunking=True,
        chunk_size=16,
    )
    hf_model = transformers.MegaModel(config).eval()
    ids = np.random.default_rng(0).integers(3, 100, (2, 48)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 40:] = 0
    with torch.no_grad():
        expected = hf_model(
            input_ids=torch.tensor(ids).long(),
            attention_mask=torch.tensor(mask).long(),
        ).last_hidden_state.numpy()

    with tempfile.TemporaryDirectory() as path:
        hf_model.save_pretrained(path)
        backbone = keras_mega.models.MegaBackbone.from_preset(path)
    actual = backbone.predict({"token_ids": ids, "padding_mask": mask}, verbose=0)
    error = np.abs(actual - expected)[mask.astype(bool)].max()
    print(f"keras-mega {keras_mega.__version__} on {keras.backend.backend()}")
    print(f"backbone: {backbone.count_params():,} parameters")
    print(f"max |keras-mega - HF| = {error:.2e}")


if __name__ == "__main__":
    main()
