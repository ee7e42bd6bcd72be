"""`glag-reproduce`: the whole comparison on one dataset, from a recipe (glag/reproduce/recipes.py).

For every stage-one loss and seed: stage one once (`glag-extract`, one bank),
then from that bank the store (`glag-generate`) and every stage-two method
(`glag-classify run`); then one table of mean ± std over seeds. The tools run as
subprocesses (stages talk only through files), each one's output going to a log
beside its bank. A step whose output exists with the same config is skipped, so
a rerun continues where the last one stopped and recomputes nothing.
"""
import os
import subprocess
import sys
import time

import click

from glag.data.errors import GlagError
from glag.parallel import BACKENDS, check as check_backend

from .group import GROUP_AUTO, dry_run_lines, group_size, run_group_step, stage_one_groups
from .plan import experiment_dir, parse_tool_args, plan, to_argv
from .recipes import RECIPES, check_names, find_recipe

TOOLS = {"extract": ("glag.extract.cli", "glag-extract", []), "generate": ("glag.generate.cli", "glag-generate", []),
         "classify": ("glag.classify.cli", "glag-classify", ["run"]),
         "extract_group": ("glag.extract.group_cli", "glag-extract-group", [])}
STAGE_TOOLS = ("extract", "generate", "classify")     # the tools a recipe and --<tool>-args configure
RECIPE = "recipe"

OPTIONS = [
    click.option("--recipe", type=click.Choice(["auto"] + sorted(RECIPES)), default="auto", show_default=True,
                 help="Reproduction preset; auto: the one for --dataset (GPU or CPU schedule by the machine)."),
    click.option("--dataset", default="", show_default=True, help="Dataset whose recipe auto picks (or $DATASET)."),
    click.option("--im", default=RECIPE, show_default=True,
                 help="Imbalance ratio; 'recipe': the recipe's first, 'all': each of the recipe's in turn."),
    click.option("--seeds", default=RECIPE, show_default=True, help="N (seeds 0..N-1) or a list '0,3,7'."),
    click.option("--losses", default=RECIPE, show_default=True, help="Stage-one losses, comma-separated."),
    click.option("--methods", default=RECIPE, show_default=True, help="Stage-two methods, comma-separated."),
    click.option("--runs-root", default="runs", show_default=True, help="Where <dataset>-im<IM>/ goes."),
    click.option("--data-root", default="", show_default=True, help="glag-extract --data-root; empty: its default."),
    click.option("--extract-args", default="", show_default=True, help="More glag-extract options, e.g. '--amp bf16'."),
    click.option("--generate-args", default="", show_default=True, help="More glag-generate options."),
    click.option("--classify-args", default="", show_default=True, help="More glag-classify run options (every run)."),
    click.option("--group-stage-one", default=GROUP_AUTO, show_default=True,
                 help="Stage-one runs trained together on one device (glag-extract-group): auto = all of a dataset's "
                      "on CUDA, none on the CPU; 0 = all, 1 = one run at a time, K = groups of at most K."),
    click.option("--jobs", default=2, show_default=True, help="Stage-two runs of one bank in parallel."),
    # threading by default: each step is already its own subprocess, a thread only waits on it
    click.option("--backend", type=click.Choice(BACKENDS), default="threading", show_default=True,
                 help="Where stage-two steps run: threading (subprocesses of this machine), loky, or dask (a Dask "
                      "cluster, the [dask] extra; workers must see the same files)."),
    click.option("--scheduler", default="", show_default=True,
                 help="--backend dask: address of a running scheduler; empty: a local cluster of --jobs workers."),
    click.option("--dry-run", is_flag=True, default=False, show_default=True,
                 help="List the steps, done or to run, and their commands; run nothing."),
    click.option("--verbose/--quiet", default=False, show_default=True,
                 help="Echo every tool's output (it always goes to <bank folder>/logs/)."),
]


def reproduce_options(fn):
    for option in reversed(OPTIONS):
        fn = option(fn)
    return fn


def _names(value: str, default: tuple) -> list:
    return list(default) if value == RECIPE else [v.strip() for v in value.split(",") if v.strip()]


def _seeds(value: str, default: int) -> list:
    try:
        if value == RECIPE:
            return list(range(default))
        return [int(v) for v in value.split(",") if v.strip()] if "," in value else list(range(int(value)))
    except ValueError:
        raise GlagError(f"--seeds {value!r}: give a count N or a list like '0,3,7'") from None


def _ims(value: str, recipe) -> list:
    if value in (RECIPE, "all") and not recipe.ims:
        return [None]
    if not recipe.ims:
        raise GlagError(f"--im {value}: recipe {recipe.name} uses the dataset's listed long tail; drop --im")
    if value in (RECIPE, "all"):
        return list(recipe.ims) if value == "all" else [recipe.ims[0]]
    try:
        return [float(value)]
    except ValueError:
        raise GlagError(f"--im {value!r}: a ratio such as 100, or 'recipe' / 'all'") from None


def resolve(options: dict) -> list:
    """The reproduction configs (one per imbalance ratio) from the command's options."""
    import torch
    dataset = options["dataset"] or (os.environ.get("DATASET", "") if options["recipe"] == "auto" else "")
    cuda = torch.cuda.is_available()
    recipe = find_recipe(options["recipe"], dataset, cuda)
    losses, methods = _names(options["losses"], recipe.losses), _names(options["methods"], recipe.methods)
    check_names(losses, methods, "--losses / --methods")
    if options["jobs"] < 1:
        raise GlagError(f"--jobs {options['jobs']}: must be >= 1")
    backend, scheduler = options.get("backend", "threading"), options.get("scheduler", "")
    check_backend(backend, scheduler)
    tools = {t: dict(getattr(recipe, t), **parse_tool_args(options[f"{t}_args"], t)) for t in STAGE_TOOLS}
    base = dict(recipe=recipe.name, dataset=recipe.dataset, note=recipe.note, losses=losses, methods=methods,
                seeds=_seeds(options["seeds"], recipe.seeds), runs_root=options["runs_root"],
                data_root=options["data_root"], jobs=options["jobs"], verbose=options["verbose"],
                backend=backend, scheduler=scheduler,
                group_stage_one=group_size(options.get("group_stage_one", GROUP_AUTO), cuda),
                **tools)
    if not base["seeds"]:
        raise GlagError(f"--seeds {options['seeds']!r}: no seed")
    return [dict(base, im=im) for im in _ims(options["im"], recipe)]


def command(step, extra=None) -> list:
    """The subprocess command line of a step: this Python, the tool's click main, its arguments (+ `extra`)."""
    module, prog, sub = TOOLS[step.tool]
    return [sys.executable, "-c", f"from {module} import main; main(prog_name={prog!r})", *sub,
            *to_argv(dict(step.options, **(extra or {})))]


def launch(cmd: list, log_path, echo=lambda line: False) -> int:
    """Run `cmd`, its output going line by line to `log_path`; lines `echo` maps to text go to stderr too.

    Returns:
        the exit code.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                       text=True, env=env) as proc:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            shown = echo(line)
            if shown:
                click.echo(shown, err=True, nl=False)
    return proc.returncode


def is_done(step) -> bool:
    from .state import bank_done, run_done, store_done
    if step.tool == "extract":
        return bank_done(step.out, step.options)
    if step.tool == "generate":
        return store_done(step.out, step.bank, step.options)
    return run_done(to_argv(step.options))


def run_step(step, number: str, verbose: bool) -> None:
    """Skip a done step, else run it (resuming / overwriting as needed); raises GlagError on failure."""
    if is_done(step):
        click.echo(f"{number} {step.label}: done, skipped", err=True)
        return
    from .state import checkpoint_agrees
    extra = {}
    if step.tool == "extract" and not checkpoint_agrees(step.out, step.options):
        extra["resume"] = False        # the checkpoint beside the bank was trained with other options
    if step.tool == "classify" and step.out.exists():
        extra["overwrite"] = True      # a run folder of an older config: replaced atomically
    click.echo(f"{number} {step.label}: running", err=True)
    started = time.time()
    # quiet: only stage one's epoch lines (minutes apart), tagged with the step
    echo = lambda line: line if verbose else (f"{number} {step.label}: {line}"
                                              if step.tool == "extract" and line.startswith("epoch ") else None)
    code = launch(command(step, extra), step.log, echo)
    if code != 0:
        lines = step.log.read_text().strip().splitlines() or ["(no output)"]
        raise GlagError(f"{number} {step.label} failed (exit {code}): {lines[-1][:300]}; full log: {step.log}")
    click.echo(f"{number} {step.label}: finished in {time.time() - started:,.0f}s", err=True)


def _run_step_safely(step, number: str, verbose: bool):
    """run_step for a joblib worker: the error as text (one failed run must not cancel its siblings)."""
    try:
        run_step(step, number, verbose)
    except GlagError as e:
        return str(e)
    return None


def execute(steps: list, jobs: int, verbose: bool, groups=(), backend: str = "threading",
            scheduler: str = "") -> None:
    """Run a plan: the stage-one groups first (if any), then per bank stage one (skipped once a group wrote
    it) and the store in order, then its stage-two runs `jobs` at a time on the joblib `backend`."""
    from glag.parallel import backend as parallel_backend
    with parallel_backend(backend, scheduler, jobs):
        _execute(steps, jobs, verbose, groups)


def _execute(steps: list, jobs: int, verbose: bool, groups) -> None:
    from joblib import Parallel, delayed        # Parallel takes the backend of the enclosing context
    for group in groups:
        run_group_step(group, verbose, launch, command)
    total = len(steps)
    numbered = [(f"[{i + 1}/{total}]", s) for i, s in enumerate(steps)]
    banks = list(dict.fromkeys(s.bank for s in steps))
    for bank in banks:
        mine = [(n, s) for n, s in numbered if s.bank == bank]
        for n, s in (x for x in mine if x[1].tool != "classify"):
            run_step(s, n, verbose)
        runs = [x for x in mine if x[1].tool == "classify"]
        errors = [e for e in Parallel(n_jobs=jobs)(delayed(_run_step_safely)(s, n, verbose) for n, s in runs) if e]
        if errors:
            raise GlagError(" | ".join(errors))


def dry_run(steps: list, groups=()) -> str:
    """One line per step: number, label, done or to run, and the command (without the Python prefix).

    A step after one that is to run (a store or run of a bank stage one rebuilds) is to run as well.
    Stage-one groups come first; the stage-one steps they cover say so instead of their own command.
    """
    prog = lambda s: " ".join([TOOLS[s.tool][1], *TOOLS[s.tool][2], *to_argv(s.options)])
    lines, in_group = dry_run_lines(groups, prog)
    redo = set()
    for i, step in enumerate(steps):
        upstream = (step.bank,) + ((step.options["store"],) if "store" in step.options else ())
        todo = any(u in redo for u in upstream) or not is_done(step)
        if todo:
            redo.add(step.bank if step.tool == "extract" else str(step.out))
        what = f"in group {in_group[id(step)]}" if id(step) in in_group else prog(step)
        lines.append(f"[{i + 1}/{len(steps)}] {step.label}: {'to run' if todo else 'done'}: {what}")
    return "\n".join(lines)


def run_reproduce(options: dict) -> list:
    """Run (or list, with --dry-run) every reproduction the options ask for; returns the results folders."""
    from .table import write_results
    folders = []
    for cfg in resolve(options):
        steps = plan(cfg)
        groups = stage_one_groups(steps, cfg, is_done)
        where = experiment_dir(cfg["runs_root"], cfg["dataset"], cfg["im"])
        if options["dry_run"]:
            click.echo(f"{where}: {len(steps)} steps" + (f", stage one in {len(groups)} group(s)" if groups else "")
                       + "\n" + dry_run(steps, groups))
            continue
        click.echo(f"reproduce {cfg['recipe']} -> {where}: {len(cfg['losses'])} losses x {len(cfg['seeds'])} seeds, "
                   f"{len(steps)} steps", err=True)
        execute(steps, cfg["jobs"], cfg["verbose"], groups, cfg["backend"], cfg["scheduler"])
        folders.append(write_results(where / "results", steps, cfg))
    return folders
