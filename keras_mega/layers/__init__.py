"""Backend-agnostic Mega layers."""

from keras_mega.layers.mega_block import MegaBlock
from keras_mega.layers.mega_cross_attention import MegaCrossAttention
from keras_mega.layers.mega_ema import MegaEMA
from keras_mega.layers.mega_gated_attention import MegaGatedAttention
from keras_mega.layers.normalization import NORMALIZATION_TYPES
from keras_mega.layers.normalization import HFRMSNorm
from keras_mega.layers.normalization import RMSNorm
from keras_mega.layers.normalization import ScaleNorm
from keras_mega.layers.normalized_ffn import NormalizedFFN
from keras_mega.layers.relative_position_bias import RotaryRelativePositionBias
from keras_mega.layers.relative_position_bias import SimpleRelativePositionBias
