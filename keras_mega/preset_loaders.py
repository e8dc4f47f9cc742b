"""keras-mega's two preset loaders, and their registration.

Subclasses of keras-hub's loaders (which `keras_hub_compat`, the one module
that imports keras-hub's private modules, provides):
`MegaAwareTransformersPresetLoader` reads HF Mega directories through
`keras_mega.convert.hf`, and `MegaAwareKerasPresetLoader` refuses presets
of a newer keras-mega format and keeps a quantized preset's dtype policy.
`register_hf_mega_loader` rebinds keras-hub's module attributes to them;
`keras_hub_compat` re-exports all three names.
"""

import json
import os
import tempfile
import warnings

from keras_mega import keras_hub_compat as compat


class MegaAwareTransformersPresetLoader(compat._OriginalLoader):
    """keras-hub's HF loader, plus HF Mega checkpoints."""

    _keras_mega_original = compat._OriginalLoader

    def __init__(self, preset, config):
        if config.get("model_type") != "mega":
            super().__init__(preset, config)
            return
        if isinstance(preset, str) and preset.startswith("hf://"):
            # One snapshot download (or huggingface_hub's cache, offline
            # too), not a request per file: also for keras-hub's base
            # classes (`keras_hub.models.Backbone.from_preset("hf://...")`).
            from keras_mega.models.mega_presets import resolve_preset

            preset = resolve_preset(preset)
        # keras-hub's `__init__` refuses model types it has no converter for.
        compat.PresetLoader.__init__(self, preset, config)
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
        return self.converter.load_task(
            self, cls, load_weights, load_task_weights, **kwargs
        )

    def load_tokenizer(self, cls, config_name="tokenizer.json", **kwargs):
        if not self.is_mega:
            return super().load_tokenizer(cls, config_name, **kwargs)
        return self.converter.convert_tokenizer(cls, self.preset, **kwargs)


class MegaAwareKerasPresetLoader(compat._OriginalKerasLoader):
    """keras-hub's loader of Keras presets, refusing newer keras-mega
    preset formats with a clear error."""

    _keras_mega_original = compat._OriginalKerasLoader

    def __init__(self, preset, config):
        super().__init__(preset, config)
        if str(config.get("registered_name", "")).startswith("keras_mega>"):
            from keras_mega.models.mega_preset_io import check_preset_format

            check_preset_format(preset)

    def load_task(self, cls, load_weights, load_task_weights, **kwargs):
        """keras-hub's, after the task's `_preset_kwargs` hook.

        keras-hub's `Task.from_preset` never loads a head when
        `num_classes` is given; a keras-mega classifier keeps its trained
        head when the count equals the saved one (the hook removes it
        then), also through a keras-hub base class
        (`keras_hub.models.TextClassifier.from_preset(preset,
        num_classes=...)`). The hook also builds the backbone for backbone
        options passed to a task.
        """
        hook = getattr(cls, "_preset_kwargs", None)
        if hook is not None:
            given = "num_classes" in kwargs
            kwargs = hook(self.preset, kwargs, load_weights)
            if given and "num_classes" not in kwargs:
                load_task_weights = True
        return super().load_task(cls, load_weights, load_task_weights, **kwargs)

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


def check_get_preset_loader():
    """Whether `get_preset_loader` hands out the rebound loaders.

    The `preset_utils.get_preset_loader` hook of `keras_hub_compat`.
    Behavioral: gets the loader of two throwaway presets (an HF Mega
    `config.json` and a keras-mega Keras one). Meaningful once
    `register_hf_mega_loader` ran (importing keras_mega runs it).
    """
    fn = getattr(compat.preset_utils, "get_preset_loader", None)
    if not callable(fn):
        return compat._missing(compat.preset_utils)
    if not (compat._HAS_HF_HOOKS and compat._HAS_KERAS_HOOKS):
        return "not checked: loader classes are missing"
    if compat.preset_loader.TransformersPresetLoader is not (
        MegaAwareTransformersPresetLoader
    ):
        return "not checked: register_hf_mega_loader() has not run"
    configs = {
        MegaAwareTransformersPresetLoader: {"model_type": "mega"},
        MegaAwareKerasPresetLoader: {
            "registered_name": "keras_mega>MegaBackbone",
            "config": {},
        },
    }
    for expected, config in configs.items():
        with tempfile.TemporaryDirectory() as preset:
            with open(os.path.join(preset, "config.json"), "w") as f:
                json.dump(config, f)
            try:
                loader = fn(preset)
            except Exception as e:  # reported, not raised
                return f"failed on {config}: {type(e).__name__}: {e}"
        if not isinstance(loader, expected):
            return (
                f"gave a {type(loader).__name__} for {config}, not the "
                f"rebound {expected.__name__}: it no longer reads the "
                "loader classes from their modules at call time"
            )
    return None


def keras_loader_rebound():
    """Whether Keras presets load through `MegaAwareKerasPresetLoader`."""
    return compat._HAS_KERAS_HOOKS and (
        compat.preset_utils.KerasPresetLoader is MegaAwareKerasPresetLoader
    )


def register_hf_mega_loader():
    """Makes keras-hub's `from_preset` read HF Mega directories (and refuse
    Keras presets of a newer keras-mega format).

    Returns:
        True if both loaders are in place; False (with a warning naming the
        missing hooks) if this keras-hub lacks the hooks of one of them.
    """
    if compat._HAS_HF_HOOKS:
        compat.preset_loader.TransformersPresetLoader = (
            MegaAwareTransformersPresetLoader
        )
    if compat._HAS_KERAS_HOOKS:
        compat.preset_utils.KerasPresetLoader = MegaAwareKerasPresetLoader
    missing = {
        name: compat._PROBLEMS[name]
        for name in compat._HF_HOOKS + compat._KERAS_HOOKS
        if name in compat._PROBLEMS
    }
    if not missing:
        return True
    lost = []
    if not compat._HAS_HF_HOOKS:
        lost.append("`from_preset` will not read Hugging Face Mega checkpoints")
    if not compat._HAS_KERAS_HOOKS:
        lost.append(
            "Keras presets of a newer keras-mega are not refused up front"
        )
    warnings.warn(
        "keras-mega cannot hook into this keras-hub's preset loading, so "
        + " and ".join(lost)
        + " (keras-mega's models and tasks still work): "
        + "; ".join(f"{name}: {problem}" for name, problem in missing.items())
        + ". keras-mega was tested with keras-hub "
        + ", ".join(compat.TESTED_KERAS_HUB)
        + ".",
        stacklevel=2,
    )
    return False
