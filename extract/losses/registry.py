"""The loss registry: one name per stage-one loss, options routed by name prefix.

A CLI option `--graloss-c` becomes `cfg["graloss_c"]`; `build_loss("graloss", ...)`
strips the prefix and passes `c=...` to `GradualBalancedLoss`, so each loss only
ever sees its own options.
"""
import inspect

from glag.data.registry import registrar

LOSSES: dict = {}

# Filled in by the loss itself; the trainer's epoch count, not a per-loss option.
_FROM_CFG = ("class_counts", "total_epochs")


register_loss = registrar(LOSSES, "loss")  # class decorator: @register_loss("graloss")


def _get(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name]


def _init_params(cls) -> dict:
    return dict(inspect.signature(cls.__init__).parameters)


def loss_options(name: str) -> dict:
    """The loss's own keyword options and their defaults, e.g. {"c": 2.0, "s": 1.0, "form": "convex"}.

    `class_counts` and `total_epochs` are left out: they come from the data and `cfg["epochs"]`.
    """
    params = _init_params(_get(name))
    return {k: p.default for k, p in params.items()
            if k != "self" and k not in _FROM_CFG and p.default is not inspect.Parameter.empty}


def loss_help(name: str) -> dict:
    """One help line per option of `loss_options(name)` (the class's OPTION_HELP), for CLI options."""
    cls = _get(name)
    return {k: getattr(cls, "OPTION_HELP", {}).get(k, "") for k in loss_options(name)}


def _own_keys(name: str, cfg: dict) -> dict:
    """cfg entries prefixed `name_`, minus those that belong to a longer registered name."""
    prefix = name + "_"
    longer = [n + "_" for n in LOSSES if n != name and n.startswith(prefix)]
    return {k[len(prefix):]: v for k, v in cfg.items()
            if k.startswith(prefix) and not any(k.startswith(p) for p in longer)}


def build_loss(name: str, class_counts, cfg: dict):
    """Build the loss `name` from the options in `cfg` that carry its prefix.

    Args:
        name: a key of LOSSES.
        class_counts: (C,) training samples per class, N_k.
        cfg: the command's resolved config; `cfg["epochs"]` is passed as `total_epochs`
            to losses that take it.
    Returns:
        LossBase instance.
    Raises:
        ValueError: unknown loss, unknown prefixed option, or `epochs` missing when needed.
    """
    cls = _get(name)
    kwargs = _own_keys(name, cfg)
    allowed = loss_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"loss {name!r} has no option(s) {unknown}; its options are {sorted(allowed)}")
    if "total_epochs" in _init_params(cls):
        if "epochs" not in cfg:
            raise ValueError(f"loss {name!r} needs cfg['epochs'] (the number of training epochs)")
        kwargs["total_epochs"] = cfg["epochs"]
    return cls(class_counts, **kwargs)
