"""The one place that touches keras-hub's private modules.

keras-hub picks the loader of a preset from its `config.json`: HF-format
directories (`model_type`) go to `TransformersPresetLoader`, whose converter
lookup is a fixed chain of model types without "mega". Its module attribute
is read at call time by `get_preset_loader`, so rebinding it to a subclass
that knows "mega" makes every `from_preset` entry point (Backbone, Task,
Preprocessor, Tokenizer, ours and keras-hub's) accept HF Mega directories.
Keras presets (`registered_name`) go to `KerasPresetLoader`, read the same
way; its subclass refuses presets of a newer keras-mega format and keeps a
quantized preset's dtype policy.

The two loaders and their registration are in `keras_mega.preset_loaders`
(re-exported here); they reach keras-hub only through this module.

Every hook is looked up by feature, not by keras-hub version: the small
helpers (`get_file`, `check_file_exists`, `load_json`, `any_equal`,
`register_presets`) fall back to an own implementation when keras-hub no
longer has them (or they no longer take the arguments keras-mega passes),
and when a loader hook is gone importing keras-mega still works (models,
tasks, Keras presets) but `register_hf_mega_loader` warns, naming what is
lost. `hook_problems()` names whatever does not look as expected;
`tests/test_keras_hub_compat.py` checks each hook by name, so a keras-hub
release that changes one fails there.
"""

import importlib
import inspect
import json
import os

from keras import ops

_IMPORT_ERRORS = {}


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        _IMPORT_ERRORS[name] = f"{type(e).__name__}: {e}"
        return None


preset_utils = _import("keras_hub.src.utils.preset_utils")
tensor_utils = _import("keras_hub.src.utils.tensor_utils")
preset_loader = _import("keras_hub.src.utils.transformers.preset_loader")

# keras-hub versions keras-mega's tests passed with (README, "keras-hub
# compatibility"). Informational: nothing checks the version.
TESTED_KERAS_HUB = (
    "0.31.1",
    "0.32.0",
    "0.32.0.dev0 (master 71453d0, 2026-08-21)",
)

# Each private hook: where it lives, and what keras-mega uses it for.
HOOKS = {
    "preset_utils.get_file": (
        "resolves a file of a preset (local directory, hf://, kaggle://, a "
        "registered preset name) to a local path; FileNotFoundError if the "
        "preset lacks it. Reads HF Mega checkpoints and tokenizer files."
    ),
    "preset_utils.check_file_exists": (
        "whether a preset has a file (False, not an error, if not): picks "
        "the weight and tokenizer files of an HF checkpoint."
    ),
    "preset_utils.load_json": "reads a preset's JSON file (task.json).",
    "preset_utils.register_presets": (
        "registers keras-mega's named presets (`mega_base_wikitext`) so "
        "`MegaBackbone.presets` lists them and `get_file` resolves them."
    ),
    "preset_utils.PresetLoader": (
        "base class of the loaders; `__init__(preset, config)` sets "
        "`.preset` and `.config`. The HF Mega loader starts from it. "
        "`get_backbone_kwargs(**kwargs)` returns `(backbone_kwargs, kwargs)` "
        "with `backbone_kwargs['dtype']` (None when not given), which the "
        "Keras loader overrides to keep a quantized preset's dtype policy."
    ),
    "preset_utils.KerasPresetLoader": (
        "loader of Keras presets, a module attribute `get_preset_loader` "
        "reads at call time; rebound to a subclass that refuses newer "
        "keras-mega preset formats and keeps quantized presets' dtypes."
    ),
    "preset_utils.get_preset_loader": (
        "picks the loader from config.json; must read KerasPresetLoader and "
        "TransformersPresetLoader from their modules at call time."
    ),
    "transformers.preset_loader.TransformersPresetLoader": (
        "loader of HF directories, rebound to a subclass that converts "
        "`model_type: mega` with keras-mega's converter and passes every "
        "other model type to keras-hub's."
    ),
    "tensor_utils.any_equal": (
        "`any_equal(inputs, values, padding_mask)`: where generated tokens "
        "are stop tokens (MegaCausalLM.generate_step)."
    ),
}


def _params(fn):
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _missing(module):
    if module is None and _IMPORT_ERRORS:
        return "missing (" + "; ".join(_IMPORT_ERRORS.values()) + ")"
    return "missing"


def _check_function(module, name, params):
    fn = getattr(module, name, None) if module is not None else None
    if not callable(fn):
        return _missing(module)
    got = _params(fn)
    if got is not None and got[: len(params)] != list(params):
        return f"signature {got}, expected to start with {list(params)}"
    return None


_LOADER_METHODS = {
    "__init__": ("self", "preset", "config"),
    "get_backbone_kwargs": ("self",),
    "load_backbone": ("self", "cls", "load_weights"),
    "load_task": ("self", "cls", "load_weights", "load_task_weights"),
    "load_tokenizer": ("self", "cls"),
    "load_preprocessor": ("self", "cls"),
}


def _check_loader_class(module, name):
    cls = getattr(module, name, None) if module is not None else None
    if not inspect.isclass(cls):
        return _missing(module)
    # keras-hub's class, also after `register_hf_mega_loader` rebound it.
    cls = getattr(cls, "_keras_mega_original", cls)
    base = getattr(preset_utils, "PresetLoader", None)
    if inspect.isclass(base) and not issubclass(cls, base):
        return "not a subclass of preset_utils.PresetLoader"
    for method, params in _LOADER_METHODS.items():
        got = _params(getattr(cls, method, None))
        if got is None or got[: len(params)] != list(params):
            return f"{method}{tuple(got or ())}, expected {params}"
    return None


# The hooks checked by signature: the leading parameters keras-mega calls
# each with, or None for a loader class (checked by `_LOADER_METHODS`).
_SIGNATURES = {
    "preset_utils.get_file": ("preset", "path"),
    "preset_utils.check_file_exists": ("preset", "path"),
    "preset_utils.load_json": ("preset", "config_file"),
    "preset_utils.register_presets": ("presets", "backbone_cls"),
    "preset_utils.PresetLoader": None,
    "preset_utils.KerasPresetLoader": None,
    "transformers.preset_loader.TransformersPresetLoader": None,
    "tensor_utils.any_equal": ("inputs", "values", "padding_mask"),
}
_MODULES = {
    "preset_utils": preset_utils,
    "tensor_utils": tensor_utils,
    "transformers.preset_loader": preset_loader,
}


def _hook_checks(dispatch=True):
    """`{hook: problem or None}` for every hook in `HOOKS`."""
    checks = {}
    for hook, params in _SIGNATURES.items():
        module, _, name = hook.rpartition(".")
        if params is None:
            checks[hook] = _check_loader_class(_MODULES[module], name)
        else:
            checks[hook] = _check_function(_MODULES[module], name, params)
    checks["preset_utils.get_preset_loader"] = (
        _loaders.check_get_preset_loader() if dispatch else None
    )
    return checks


def hook_problems(dispatch=True):
    """`{hook: problem}` for each private hook that is not as expected.

    Empty when the installed keras-hub has every hook keras-mega uses, with
    the signatures it calls. The helpers with a fallback (see `HOOKS`)
    still work when listed here, through keras-mega's own implementation.

    Args:
        dispatch: also check, by getting the loaders of two throwaway
            presets, that `get_preset_loader` uses the rebound loaders.
    """
    checks = _hook_checks(dispatch)
    return {name: problem for name, problem in checks.items() if problem}


# Checked once, before the rebinding; the dispatch is checked by the tests.
_PROBLEMS = hook_problems(dispatch=False)


# --- Helpers, with a fallback where keras-hub lacks them ---


def _fallback_get_file(preset, path):
    """Local preset directories only (keras-hub has no `get_file`)."""
    if not isinstance(preset, str):
        raise ValueError(  # as keras-hub's get_file
            f"A preset identifier must be a string. Received: preset={preset}"
        )
    if "://" in preset or not os.path.isdir(preset):
        raise ValueError(
            f"Cannot load {preset!r}: this keras-hub has no "
            "`keras_hub.src.utils.preset_utils.get_file` (see "
            "`keras_mega.keras_hub_compat.hook_problems()`), so "
            "keras-mega reads local preset directories only."
        )
    local_path = os.path.join(preset, path)
    if not os.path.exists(local_path):
        raise FileNotFoundError(
            f"`{path}` doesn't exist in preset directory `{preset}`."
        )
    return local_path


def _pick(hook, fallback, *needs):
    """keras-hub's `hook` (`"module.name"`), or keras-mega's `fallback` when
    it, or a hook it `needs`, is not as expected (`_PROBLEMS`)."""
    if any(name in _PROBLEMS for name in (hook, *needs)):
        return fallback
    module, _, name = hook.rpartition(".")
    return getattr(_MODULES[module], name)


get_file = _pick("preset_utils.get_file", _fallback_get_file)


def _fallback_check_file_exists(preset, path):
    try:
        get_file(preset, path)
    except FileNotFoundError:
        return False
    return True


def _fallback_load_json(preset, config_file="config.json"):
    with open(get_file(preset, config_file), encoding="utf-8") as f:
        return json.load(f)


# keras-hub's own helpers call keras-hub's `get_file`: use ours with ours.
check_file_exists = _pick(
    "preset_utils.check_file_exists",
    _fallback_check_file_exists,
    "preset_utils.get_file",
)
load_json = _pick(
    "preset_utils.load_json", _fallback_load_json, "preset_utils.get_file"
)


def _fallback_any_equal(inputs, values, padding_mask):
    """True where `inputs` equals any of `values`, and `padding_mask`."""
    output = ops.equal(inputs, values[0])
    for value in values[1:]:
        output = ops.logical_or(output, ops.equal(inputs, value))
    return ops.logical_and(output, padding_mask)


any_equal = _pick("tensor_utils.any_equal", _fallback_any_equal)


def _fallback_register_presets(presets, backbone_cls):
    """keras-hub's preset registry, written directly where it still exists
    (else keras-mega's named presets are not registered)."""
    builtin = getattr(preset_utils, "BUILTIN_PRESETS", None)
    per_backbone = getattr(preset_utils, "BUILTIN_PRESETS_FOR_BACKBONE", None)
    if not isinstance(builtin, dict) or per_backbone is None:
        return
    for name, preset in presets.items():
        builtin[name] = preset
        per_backbone[backbone_cls][name] = preset


register_presets = _pick(
    "preset_utils.register_presets", _fallback_register_presets
)


# --- The loader hooks ---

# Each rebinding needs these hooks; one works without the other.
_HF_HOOKS = (
    "preset_utils.PresetLoader",
    "transformers.preset_loader.TransformersPresetLoader",
)
_KERAS_HOOKS = ("preset_utils.KerasPresetLoader",)
_HAS_HF_HOOKS = not any(name in _PROBLEMS for name in _HF_HOOKS)
_HAS_KERAS_HOOKS = not any(name in _PROBLEMS for name in _KERAS_HOOKS)


def _original(module, name):
    """keras-hub's class, also when this module is reloaded after the
    rebinding (else a placeholder, never instantiated)."""
    if module is None or not inspect.isclass(getattr(module, name, None)):
        return type(f"Missing{name}", (), {})
    cls = getattr(module, name)
    return getattr(cls, "_keras_mega_original", cls)


PresetLoader = _original(preset_utils, "PresetLoader")
_OriginalLoader = _original(preset_loader, "TransformersPresetLoader")
_OriginalKerasLoader = _original(preset_utils, "KerasPresetLoader")


# The loaders subclass the classes above (a cycle: `preset_loaders` imports
# this module, complete but for the names below).
from keras_mega import preset_loaders as _loaders  # noqa: E402

MegaAwareTransformersPresetLoader = _loaders.MegaAwareTransformersPresetLoader
MegaAwareKerasPresetLoader = _loaders.MegaAwareKerasPresetLoader
keras_loader_rebound = _loaders.keras_loader_rebound
register_hf_mega_loader = _loaders.register_hf_mega_loader
