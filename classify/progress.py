"""Progress of a stage-two fit on stderr, with an ETA over every pass still to come.

An epoch's cost is the synthetic draws, which every AD lane shares, plus the
heads, which scale with the lanes (3 in AD's search, 1 in its refit). The meter
learns both from the epochs done (the draws' seconds are timed apart), so the
ETA of a search counts the cheaper-per-epoch refit that follows it honestly.
"""
import time

import click


class Progress:
    """Lines about every tenth epoch, and within an epoch at least every `every` seconds.

    Args:
        enabled: print anything at all.
        epochs: epochs per pass; lanes: heads trained in each pass, in order (e.g. [3, 1]).
    """

    def __init__(self, enabled: bool, epochs: int, lanes: list, every: float = 30.0):
        self.enabled, self.E, self.lanes, self.every = enabled, epochs, list(lanes), every
        self.last = self.epoch_start = time.time()
        self.index = 0
        self.epochs = self.head_epochs = 0
        self.shared = self.per_head = 0.0            # seconds of the epochs done: draws, and everything else

    def pass_started(self, index: int):
        self.index = index

    def epoch_started(self):
        self.epoch_start = time.time()

    def _cost(self, lanes: int) -> float:
        """Seconds of one epoch with `lanes` heads, from the epochs done."""
        return self.shared / self.epochs + lanes * self.per_head / max(self.head_epochs, 1)

    def eta(self, epoch: int, fraction: float) -> str:
        """Seconds left once `fraction` of 0-based epoch `epoch` of the current pass is done."""
        lanes = self.lanes[self.index]
        if self.epochs:
            cost = {n: self._cost(n) for n in set(self.lanes)}
        elif fraction > 0:                          # the first epoch: its own pace, shared costs unknown yet
            per_head = (time.time() - self.epoch_start) / fraction / lanes
            cost = {n: n * per_head for n in set(self.lanes)}
        else:
            return "ETA ?"
        left = cost[lanes] * (self.E - epoch - fraction) + sum(self.E * cost[n] for n in self.lanes[self.index + 1:])
        return f"ETA {left:,.0f}s"

    def rows(self, epoch: int, done: int, total: int, name: str):
        if not self.enabled or time.time() - self.last < self.every:
            return
        click.echo(f"stage-two {_label(name)}epoch {epoch + 1}/{self.E}: rows {done:,}/{total:,} "
                   f"{self.eta(epoch, done / max(total, 1))}", err=True)
        self.last = time.time()

    def epoch_done(self, epoch: int, name: str, extra: str, seconds: float, shared: float):
        """Record an epoch of `seconds`, `shared` of them drawing synthetic rows; print about every tenth."""
        self.epochs += 1
        self.head_epochs += self.lanes[self.index]
        self.shared += shared
        self.per_head += seconds - shared
        if not self.enabled or not ((epoch + 1) % max(1, self.E // 10) == 0 or epoch + 1 == self.E):
            return
        click.echo(f"stage-two {_label(name)}epoch {epoch + 1}/{self.E} {self.eta(epoch, 1.0)} {extra}", err=True)
        self.last = time.time()


def _label(name: str) -> str:
    return "" if name == "fit" else f"({name}) "
