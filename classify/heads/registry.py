"""The head registry: one name per stage-two head, options routed by name prefix.

`--tau-norm-taus` becomes `cfg["tau_norm_taus"]`; `build_head("tau_norm", ...)`
strips the prefix and passes `taus=...`, so each head only sees its own options.
"""
import inspect

from glag.data.registry import registrar

HEADS: dict = {}
_register = registrar(HEADS, "head")


def register_head(name: str):
    """Class decorator adding a HeadBase subclass to HEADS under `name`.

    Raises:
        KeyError: if `name` is already registered.
    """
    def add(cls):
        cls.name = name
        return _register(name)(cls)
    return add


def head_options(name: str) -> dict:
    """The head's own keyword options and their defaults (everything after `ctx`)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {sorted(HEADS)}")
    params = inspect.signature(HEADS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "ctx")}


def own_options(name: str, cfg: dict) -> dict:
    """The cfg entries prefixed `name_` that head `name` takes, prefix stripped."""
    allowed = head_options(name)
    prefix = name + "_"
    return {k[len(prefix):]: v for k, v in cfg.items() if k.startswith(prefix) and k[len(prefix):] in allowed}


def build_head(name: str, ctx, cfg: dict):
    """Build head `name` from the stage-one context and the cfg entries prefixed `name_`.

    Args:
        name: a key of HEADS.
        ctx: HeadContext.
        cfg: resolved run config.
    Returns:
        HeadBase instance.
    """
    return HEADS[name](ctx, **own_options(name, cfg))
