"""One definition per option that several tools share: its range, its parsing, its one-line error.

click types (so every tool, sweep grids included, rejects a bad value the same way, before any work):

    Beta        a confidence beta in [0, 1] (glag-generate --beta-init, glag-classify run --beta-init, ...)
    NonNegative gamma, the dispersion (>= 0)
    Positive    K, epochs, ... (an int >= 1)
    Ratio       an imbalance ratio (a finite number >= 1)
    TauSpec     one tau, or START:STOP:STEP (tau-norm, post-hoc LA)
    Device      auto, cpu, cuda or cuda:N, and CUDA must exist when asked for

Each accepts "auto" when made with auto=True (values the bank or store fill in later).
"""
import math

import click

AUTO = "auto"


class _Checked(click.ParamType):
    """A float/int type with a range check and an optional "auto"."""
    kind = float

    def __init__(self, auto: bool = False):
        self.auto = auto

    def check(self, value) -> str | None:
        """The complaint about a parsed value, or None."""
        return None

    def convert(self, value, param, ctx):
        if self.auto and value == AUTO:
            return value
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a {'whole ' if self.kind is int else ''}number"
                      + (" or 'auto'" if self.auto else ""), param, ctx)
        if self.kind is float and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        complaint = self.check(number)
        if complaint:
            self.fail(f"{value!r}: {complaint}", param, ctx)
        return number


class Beta(_Checked):
    name = "BETA"

    def check(self, v):
        return None if 0.0 <= v <= 1.0 else "a confidence beta is in [0, 1]"


class NonNegative(_Checked):
    name = "FLOAT>=0"

    def check(self, v):
        return None if v >= 0 else "must be >= 0"


class Positive(_Checked):
    name = "INTEGER>=1"
    kind = int

    def check(self, v):
        return None if v >= 1 else "must be >= 1"


class Ratio(_Checked):
    name = "RATIO"

    def check(self, v):
        return None if v >= 1 else "an imbalance ratio n_max / n_min is >= 1"


class TauSpec(click.ParamType):
    """One tau ("1.0") or an inclusive range START:STOP:STEP; kept as text, checked here."""
    name = "TAU|START:STOP:STEP"

    def convert(self, value, param, ctx):
        text = str(value)
        parts = text.split(":")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            self.fail(f"{text!r}: give one tau (1.0) or START:STOP:STEP (0:2:0.1)", param, ctx)
        if len(parts) not in (1, 3) or not all(math.isfinite(n) for n in numbers):
            self.fail(f"{text!r}: give one tau (1.0) or START:STOP:STEP (0:2:0.1)", param, ctx)
        if len(parts) == 3 and (numbers[2] <= 0 or numbers[1] < numbers[0]):
            self.fail(f"{text!r}: a range needs STEP > 0 and STOP >= START", param, ctx)
        return text


class Device(click.ParamType):
    """auto, cpu, cuda or cuda:N; a CUDA device must be there when named."""
    name = "auto|cpu|cuda[:N]"

    def convert(self, value, param, ctx):
        text = str(value)
        if text in (AUTO, "cpu"):
            return text
        kind, _, index = text.partition(":")
        if kind != "cuda" or (index and not index.isdigit()):
            self.fail(f"{text!r}: choose auto, cpu, cuda or cuda:N", param, ctx)
        import torch
        if not torch.cuda.is_available():
            self.fail(f"{text}: CUDA is not available here; use auto or cpu", param, ctx)
        if index and int(index) >= torch.cuda.device_count():
            self.fail(f"{text}: only {torch.cuda.device_count()} CUDA device(s) here", param, ctx)
        return text
