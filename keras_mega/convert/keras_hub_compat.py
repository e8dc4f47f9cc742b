"""The one place that touches keras-hub's private modules.

keras-hub picks the loader of a preset from its `config.json`: HF-format
directories (`model_type`) go to `TransformersPresetLoader`, whose converter
lookup is a fixed chain of model types without "mega". Its module attribute
is read at call time by `get_preset_loader`, so rebinding it to a subclass
that knows "mega" makes every `from_preset` entry point (Backbone, Task,
Preprocessor, Tokenizer, ours and keras-hub's) accept HF Mega directories.
"""

from keras_hub.src.utils import preset_utils
from keras_hub.src.utils import tensor_utils
from keras_hub.src.utils.transformers import preset_loader

PresetLoader = preset_utils.PresetLoader
get_file = preset_utils.get_file
check_file_exists = preset_utils.check_file_exists
load_json = preset_utils.load_json
any_equal = tensor_utils.any_equal
register_presets = preset_utils.register_presets

_OriginalLoader = preset_loader.TransformersPresetLoader


class MegaAwareTransformersPresetLoader(_OriginalLoader):
    """keras-hub's HF loader, plus HF Mega checkpoints."""

    def __init__(self, preset, config):
        if config.get("model_type") != "mega":
            super().__init__(preset, config)
            return
        PresetLoader.__init__(self, preset, config)
        from keras_mega.convert import hf

        self.converter = hf

    @property
    def is_mega(self):
        return self.config.get("model_type") == "mega"

    def load_backbone(self, cls, load_weights, **kwargs):
        if not self.is_mega:
            return super().load_backbone(cls, load_weights, **kwargs)
        return self.converter.load_backbone(
            self.preset, self.config, cls, load_weights, **kwargs
        )

    def load_task(self, cls, load_weights, load_task_weights, **kwargs):
        if not self.is_mega:
            return super().load_task(
                cls, load_weights, load_task_weights, **kwargs
            )
        from keras_mega.convert import hf_heads

        return hf_heads.load_task(
            self, cls, load_weights, load_task_weights, **kwargs
        )

    def load_tokenizer(self, cls, config_name="tokenizer.json", **kwargs):
        if not self.is_mega:
            return super().load_tokenizer(cls, config_name, **kwargs)
        from keras_mega.convert import hf_heads

        return hf_heads.convert_tokenizer(cls, self.preset, **kwargs)


class MegaAwareKerasPresetLoader(preset_utils.KerasPresetLoader):
    """keras-hub's loader of Keras presets, refusing newer keras-mega
    preset formats with a clear error."""

    def __init__(self, preset, config):
        super().__init__(preset, config)
        if str(config.get("registered_name", "")).startswith("keras_mega>"):
            from keras_mega.models.mega_preset_io import check_preset_format

            check_preset_format(preset)

    def get_backbone_kwargs(self, **kwargs):
        """keras-hub forwards `dtype=None` when none is given, which would
        replace a quantized preset's saved `DTypePolicyMap` (its layers
        would then be built in float and fail to load their int8/float8
        weights). Keep the saved policy unless a dtype is asked for, and
        refuse to change the dtype of a quantized preset."""
        backbone_kwargs, kwargs = super().get_backbone_kwargs(**kwargs)
        saved = self.config.get("config", {}).get("dtype")
        quantized = (
            isinstance(saved, dict)
            and saved.get("class_name") == "DTypePolicyMap"
        )
        if backbone_kwargs.get("dtype") is None:
            backbone_kwargs.pop("dtype", None)
        elif quantized:
            raise ValueError(
                f"The preset {self.preset} holds quantized weights; it "
                "cannot be loaded with another dtype "
                f"(dtype={backbone_kwargs['dtype']!r}). Load it without "
                "`dtype`, or quantize a float preset after loading it in "
                "that dtype."
            )
        return backbone_kwargs, kwargs


def register_hf_mega_loader():
    """Makes keras-hub's `from_preset` read HF Mega directories."""
    preset_loader.TransformersPresetLoader = MegaAwareTransformersPresetLoader
    preset_utils.KerasPresetLoader = MegaAwareKerasPresetLoader
