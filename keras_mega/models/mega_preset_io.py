"""Preset saving and loading shared by keras-mega's models and layers."""

from keras_mega.models.mega_model_mixin import atomic_directory


class MegaPresetMixin:
    """Atomic `save_to_preset`, and a `from_preset` that fails fast offline.

    For the tokenizer and the preprocessors: unlike `MegaModelMixin` it adds
    no `fit`/`predict`/`export` (and no token id checks), which layers do
    not have.
    """

    @classmethod
    def from_preset(cls, preset, *args, **kwargs):
        """keras-hub's `from_preset`, failing fast offline for remote
        handles and refusing presets of a newer keras-mega."""
        from keras_mega.models.mega_presets import check_reachable

        check_reachable(preset, cls.__name__)
        return super().from_preset(preset, *args, **kwargs)

    def save_to_preset(self, preset_dir, *args, **kwargs):
        """Saves to `preset_dir` atomically: a failed or interrupted save
        leaves no half-written preset and keeps an existing one."""
        with atomic_directory(preset_dir) as tmp:
            super().save_to_preset(tmp, *args, **kwargs)
