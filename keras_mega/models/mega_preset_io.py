"""Preset saving and loading shared by keras-mega's models and layers."""

import contextlib
import contextvars
import json
import os
import shutil
import uuid
import warnings

# Version of the preset layout keras-mega writes; presets of a newer format
# are refused with a clear error instead of failing somewhere inside.
PRESET_FORMAT_VERSION = 1
PRESET_FORMAT_FILE = "keras_mega.json"


_SAVING = contextvars.ContextVar("keras_mega_saving", default=False)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary sibling of `path` that replaces `path` on success.

    The temporary directory starts as a copy of an existing `path`, so a
    save adds to a preset as keras-hub's does (a tokenizer saved into a
    model's preset keeps the model). On an error (or an interrupt) the
    temporary directory is removed and `path` is left as it was. Saves
    nested in one (a task saving its backbone) write into it directly.
    """
    if _SAVING.get():
        yield path
        return
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = os.path.join(parent, f".{os.path.basename(path)}.partial-{tag}")
    old = os.path.join(parent, f".{os.path.basename(path)}.old-{tag}")
    if os.path.isdir(path):
        shutil.copytree(path, tmp)
    else:
        os.makedirs(tmp)
    token = _SAVING.set(True)
    try:
        yield tmp
        with open(os.path.join(tmp, PRESET_FORMAT_FILE), "w") as f:
            from keras_mega import __version__

            json.dump(
                {
                    "format_version": PRESET_FORMAT_VERSION,
                    "keras_mega_version": __version__,
                },
                f,
            )
        if os.path.exists(path):
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(path):
            os.rename(old, path)
        raise
    finally:
        _SAVING.reset(token)
    shutil.rmtree(old, ignore_errors=True)


def check_preset_format(preset_dir):
    """Refuses presets written by a newer, incompatible keras-mega."""
    file = os.path.join(str(preset_dir), PRESET_FORMAT_FILE)
    if not os.path.exists(file):
        return
    with open(file) as f:
        info = json.load(f)
    version = info.get("format_version", 0)
    if version > PRESET_FORMAT_VERSION:
        from keras_mega import __version__

        raise ValueError(
            f"The preset {preset_dir} was written by keras-mega "
            f"{info.get('keras_mega_version', '?')} in preset format "
            f"{version}; this keras-mega ({__version__}) reads formats up to "
            f"{PRESET_FORMAT_VERSION}. Upgrade keras-mega to load it."
        )


# Keras warns on loading weights saved with a built optimizer into a model
# whose optimizer is not built yet. `from_preset` never restores optimizer
# state (a loaded task is compiled afresh), so the warning says nothing.
OPTIMIZER_WARNING = "Skipping variable loading for optimizer"


def public_tasks(backbone_cls):
    """Names of keras-mega's public task classes on `backbone_cls`."""
    from keras_hub.models import Task

    import keras_mega.models

    names = []
    for name in dir(keras_mega.models):
        obj = getattr(keras_mega.models, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Task)
            and issubclass(backbone_cls, getattr(obj, "backbone_cls", ()))
        ):
            names.append(name)
    return sorted(names)


def fix_metadata(preset_dir, model):
    """Lists the public task classes in `metadata.json`.

    keras-hub names the class each task derives from first, which for
    keras-mega's tasks is a private mixin.
    """
    from keras_hub.models import Backbone

    path = os.path.join(preset_dir, "metadata.json")
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        backbone = model
    if not os.path.exists(path) or not isinstance(backbone, Backbone):
        return
    with open(path) as f:
        metadata = json.load(f)
    metadata["tasks"] = public_tasks(type(backbone))
    with open(path, "w") as f:
        f.write(json.dumps(metadata, indent=4))


class MegaPresetMixin:
    """Atomic `save_to_preset`, and a `from_preset` that resolves handles.

    Used as is by the tokenizer and the preprocessors, and through
    `MegaModelMixin` by the backbone and the tasks.
    """

    @classmethod
    def _preset_kwargs(cls, preset, kwargs, load_weights=True):
        """Hook: adjusts `from_preset` kwargs for a resolved `preset`."""
        return kwargs

    @classmethod
    def from_preset(cls, preset, *args, **kwargs):
        """keras-hub's `from_preset`, plus: `hf://` handles through
        huggingface_hub's cache (offline too), a clear error for a path
        that does not exist or a preset of a newer keras-mega."""
        from keras_mega.models.mega_presets import resolve_preset

        preset = resolve_preset(preset, cls.__name__)
        load_weights = args[0] if args else kwargs.get("load_weights", True)
        from keras_mega import keras_hub_compat as compat

        if not compat.keras_loader_rebound():
            # Else the loader runs the hook, for keras-hub's base classes too.
            kwargs = cls._preset_kwargs(preset, kwargs, load_weights)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=OPTIMIZER_WARNING, category=UserWarning
            )
            return super().from_preset(preset, *args, **kwargs)

    def save_to_preset(self, preset_dir, *args, **kwargs):
        """Saves to `preset_dir` atomically: a failed or interrupted save
        leaves no half-written preset and keeps an existing one."""
        with atomic_directory(preset_dir) as tmp:
            super().save_to_preset(tmp, *args, **kwargs)
            fix_metadata(tmp, self)
