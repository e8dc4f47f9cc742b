"""Mega backbone, tokenizer, preprocessors and task models."""

from keras_mega.models.mega_backbone import MegaBackbone
