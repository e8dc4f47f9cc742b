"""keras-mega: Mega (Moving Average Equipped Gated Attention) for Keras 3.

Importing the package registers its classes with Keras and teaches
keras-hub's `from_preset` to read Hugging Face Mega checkpoints.
"""

# First: on JAX's CPU backend it sets XLA_FLAGS before JAX starts (remat).
from keras_mega import backend as _backend  # noqa: F401
from keras_mega import keras_hub_compat as _keras_hub_compat
from keras_mega import layers
from keras_mega import models
from keras_mega.models import *  # noqa: F401,F403

__version__ = "0.1.0"

_keras_hub_compat.register_hf_mega_loader()
