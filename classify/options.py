"""click options of `glag-classify run`, built from config.OPTIONS and the stage-two losses' own options."""
import click

from glag.cli.options import Beta, Device, NonNegative, Positive, TauSpec
from glag.cli.tensorboard import check_option
from glag.extract.names import LOSS_NAMES, LOSS_OPTIONS

from .config import AUTO, AUTO_FLOATS, AUTO_INTS, CHOICES, HEAD_NAMES, OPTIONS, PRESETS


class AutoFloat(click.ParamType):
    """A float, or "auto" (filled from the bank or the store when the run starts)."""
    name = "FLOAT|auto"

    def convert(self, value, param, ctx):
        if value == AUTO or isinstance(value, float):
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


class AutoInt(click.ParamType):
    """An integer >= 0, or "auto"."""
    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if value == AUTO or (isinstance(value, int) and value >= 0):
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)
        if number < 0:
            self.fail(f"{number} is negative; give 0 or more, or 'auto'", param, ctx)
        return number


def loss_option_specs() -> dict:
    """{"<loss>_<option>": (default, help)} for every loss (glag.extract.names, which tests check against the
    registry), e.g. graloss_c."""
    return {f"{name}_{opt}": (default, f"--loss {name}: {text}")
            for name in LOSS_NAMES for opt, (default, text) in LOSS_OPTIONS[name].items()}


# Options whose range several tools share: one definition (glag.cli.options), one message.
SHARED_TYPES = {"beta_init": Beta(auto=True), "beta_min": Beta(), "beta_max": Beta(), "beta_step": Beta(),
                "ad_delta": Beta(), "gamma": NonNegative(auto=True), "tau_norm_taus": TauSpec(),
                "posthoc_la_taus": TauSpec(), "device": Device(), "batch_size": Positive(),
                "kd_temperature": NonNegative()}


def _type(name, default):
    if name in SHARED_TYPES:
        return SHARED_TYPES[name]
    choices = {"head": sorted(HEAD_NAMES), "loss": sorted(LOSS_NAMES), "method": sorted(PRESETS)}.get(name) or \
        CHOICES.get(name)
    if choices:
        return click.Choice(list(choices))
    if name in AUTO_INTS:
        return AutoInt()
    return AutoFloat() if name in AUTO_FLOATS else type(default)


def option(name: str, default, help_text: str):
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool):
        return click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=default, show_default=True,
                            help=help_text)
    if name == "tensorboard":    # refused at parse time without the tensorboard package (glag.cli.tensorboard)
        return click.option(flag, name, default=default, type=click.Path(file_okay=False), callback=check_option,
                            show_default="none", help=help_text)
    return click.option(flag, name, default=default, type=_type(name, default), show_default=True, help=help_text)


def run_options(fn):
    """Decorate a command with every run option, in OPTIONS order, then the loss options."""
    specs = dict(OPTIONS, **loss_option_specs())
    for name, (default, help_text) in reversed(list(specs.items())):
        fn = option(name, default, help_text)(fn)
    return fn
