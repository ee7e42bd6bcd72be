"""Stage one of a reproduction as groups: the banks still to train go to `glag-extract-group` together.

On a GPU one ResNet-32 run leaves the device mostly idle (docs/stage-one.md), so the stage-one steps
of one dataset that can share a step (same options but loss and seed: always so in a plan) train as
one grouped network. A group is a product losses x seeds: the to-do banks are gathered by loss, and
losses with the same to-do seeds share one `glag-extract-group` call, which writes each bank where the
plan expects it; the per-bank steps then find stage one done and go on with the store and stage two.
`--group-stage-one auto` groups on CUDA only; on the CPU runs go one at a time, as before.
"""
from dataclasses import dataclass
from pathlib import Path

import click

from glag.data.errors import GlagError

GROUP_AUTO = "auto"
PER_RUN = ("loss", "seed", "out", "current")   # the extract step options a group names by --losses / --seeds


def group_size(value: str, cuda: bool) -> int:
    """--group-stage-one: 0 = every to-do bank in one group, 1 = no groups, K = groups of at most K."""
    if value == GROUP_AUTO:
        return 0 if cuda else 1
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise GlagError(f"--group-stage-one {value!r}: give 'auto', 0 (all runs in one group), 1 (no groups) "
                        "or the largest group")
    return size


@dataclass(frozen=True)
class GroupStep:
    """One `glag-extract-group` call covering the stage-one steps `steps` (a losses x seeds product)."""
    number: int
    options: dict
    steps: tuple
    log: Path
    tool: str = "extract_group"

    @property
    def label(self) -> str:
        return f"stage one ({self.options['losses']} x seeds {self.options['seeds']})"


def stage_one_groups(steps: list, cfg: dict, is_done) -> list:
    """The group calls for the stage-one steps still to run (none when cfg's group size is 1)."""
    size = cfg.get("group_stage_one", 1)
    todo = [s for s in steps if s.tool == "extract" and not is_done(s)]
    if size == 1 or not todo:
        return []
    by_loss = {}
    for step in todo:
        by_loss.setdefault(step.loss, []).append(step.seed)
    by_seeds = {}
    for loss, seeds in by_loss.items():
        by_seeds.setdefault(tuple(seeds), []).append(loss)
    groups = []
    for seeds, losses in by_seeds.items():
        covered = tuple(s for s in todo if s.loss in losses and s.seed in seeds)
        options = {k: v for k, v in covered[0].options.items() if k not in PER_RUN}
        options.update(losses=",".join(losses), seeds=",".join(map(str, seeds)), runs_root=cfg["runs_root"])
        if size > 1:
            options["max_group"] = size
        _check_places(covered, options)
        log = covered[0].bank.parents[2] / "logs" / f"stage-one-group-{len(groups) + 1}.log"
        groups.append(GroupStep(len(groups) + 1, options, covered, log))
    return groups


def _check_places(covered: tuple, options: dict) -> None:
    """The group writes each bank where glag-extract's layout puts it: that must be where the plan wants it."""
    from glag.extract.group_run import run_out
    for step in covered:
        if {k: v for k, v in step.options.items() if k not in PER_RUN} != {
                k: v for k, v in options.items() if k not in ("losses", "seeds", "runs_root", "max_group")}:
            raise GlagError(f"{step.label}: its options differ from the group's; rerun with --group-stage-one 1")
        if Path(run_out(options, step.loss, step.seed, options["runs_root"])) != Path(step.out):
            raise GlagError(f"{step.label}: a group would write {step.out} elsewhere; rerun with --group-stage-one 1")


def run_group_step(group: GroupStep, verbose: bool, launch, command) -> None:
    """Run one group call (resuming its runs' checkpoints); raises GlagError naming its log on failure."""
    from .state import checkpoint_agrees
    # a checkpoint trained with other options restarts, as a single stage-one step does; in a group that
    # restarts every run of the call (the others' checkpoints agree, so that only costs their progress)
    extra = {} if all(checkpoint_agrees(s.out, s.options) for s in group.steps) else {"resume": False}
    click.echo(f"[group {group.number}] {group.label}: running {len(group.steps)} runs together", err=True)
    echo = lambda line: line if verbose else (f"[group {group.number}] {line}" if line.startswith("epoch ")
                                              or line.startswith("group epoch ") else None)
    code = launch(command(group, extra), group.log, echo)
    if code != 0:
        lines = group.log.read_text().strip().splitlines() or ["(no output)"]
        raise GlagError(f"{group.label} failed (exit {code}): {lines[-1][:300]}; full log: {group.log}")


def dry_run_lines(groups: list, prog) -> tuple:
    """The listing lines of the groups, and {stage-one step: its group number} for the steps they cover."""
    lines, covered = [], {}
    for group in groups:
        lines.append(f"[group {group.number}/{len(groups)}] {group.label}: to run: {prog(group)}")
        covered.update({id(s): group.number for s in group.steps})
    return lines, covered
