"""Options listed once per layer, in the class's `OPTIONS`.

`OPTIONS` maps every option a layer takes (besides the positional
arguments of its `__init__`) to its default, in order. The constructor's
signature (what `inspect`, `help()` and `check_kwargs` see), `get_config`
and the options a layer hands its sublayers are all derived from it, and a
composite layer builds its `OPTIONS` from its sublayers': `MegaBlock`'s
hold `MegaGatedAttention`'s, which hold `MegaEMA`'s, and `MegaBackbone`'s
hold `MegaBlock`'s. A new EMA option is one entry in `MegaEMA.OPTIONS` and
the code that uses it; the layers above take, store, save and hand it on.
"""

import inspect


def renamed(options, names):
    """`options` with some keys renamed (`names`: own name -> new name)."""
    return {names.get(name, name): value for name, value in options.items()}


class LayerOptions:
    """Mixin: constructor options, signature and config from `OPTIONS`."""

    OPTIONS = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        params = list(inspect.signature(init).parameters.values())
        cls.POSITIONAL = tuple(
            p.name for p in params[1:] if p.kind == p.POSITIONAL_OR_KEYWORD
        )
        split = len(cls.POSITIONAL) + 1
        options = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=v)
            for name, v in cls.OPTIONS.items()
        ]
        init.__signature__ = inspect.Signature(
            params[:split] + options + params[split:]
        )

    @classmethod
    def pop_options(cls, kwargs):
        """This class's options from `kwargs` (removed there), defaults
        filled in."""
        return {
            name: kwargs.pop(name, default)
            for name, default in cls.OPTIONS.items()
        }

    def set_options(self, options):
        for name, value in options.items():
            setattr(self, name, value)

    def options_for(self, layer_cls, names=None):
        """The options of sublayer class `layer_cls`, read from this
        layer's attributes (`names`: the sublayer's name -> this layer's,
        where they differ)."""
        names = names or {}
        return {
            name: getattr(self, names.get(name, name))
            for name in layer_cls.OPTIONS
        }

    def get_config(self):
        config = super().get_config()
        for name in self.POSITIONAL + tuple(self.OPTIONS):
            config[name] = getattr(self, name)
        return config
