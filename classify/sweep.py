"""Many stage-two runs from one (or a few) feature banks, in parallel, and one comparison table.

Every configuration is checked before anything runs (unknown keys, missing banks, banks made
differently, missing stores: sweep_inputs.py).
Runs are keyed by the hash of their resolved config and written atomically, so
an interrupted sweep resumes where it stopped, and two sweeps that share runs
or a table folder never mix files: each file appears whole or not at all.
"""
import itertools
import json
import os
from pathlib import Path

import click

from glag.data.atomic import atomic_file
from glag.cli.util import resolve_bank
from glag.data.errors import GlagError
from glag.data.layout import experiment_name

from .config import defaults
from .grids import GRIDS
from .sweep_inputs import check_banks, check_stores
from .table import csv_text, markdown

_SECTIONS = ("base", "grid", "runs", "description")


def load_grid(spec: str) -> tuple[str, dict]:
    """A shipped grid by name, or a JSON file. Returns (name, grid)."""
    if spec in GRIDS:
        return spec, GRIDS[spec]
    path = Path(spec)
    if not path.is_file():
        raise GlagError(f"--grid {spec}: neither a shipped grid ({sorted(GRIDS)}) nor a JSON file")
    try:
        return path.stem, json.loads(path.read_text())
    except ValueError as e:
        raise GlagError(f"--grid {path}: not valid JSON ({e})") from None


def expand(grid: dict, name: str, known: dict, fill: dict) -> list[dict]:
    """The list of per-run overrides: base + product(grid) + each of runs, placeholders filled.

    Raises GlagError naming unknown sections or keys.
    """
    bad = sorted(set(grid) - set(_SECTIONS))
    points = grid.get("grid", {})
    runs = grid.get("runs") or [{}]
    keys = set(grid.get("base", {})) | set(points) | {k for r in runs for k in r}
    bad += sorted(keys - set(known))
    if bad:
        raise GlagError(f"--grid {name}: unknown key(s) {bad}; sections are {list(_SECTIONS)} and keys are "
                        f"run options such as {sorted(known)[:12]}... (see `glag-classify run --help`)")
    if any(not isinstance(v, list) or not v for v in points.values()):
        raise GlagError(f"--grid {name}: every entry of \"grid\" must be a non-empty list of values")
    out = []
    for combo in itertools.product(*points.values()):
        for extra in runs:
            entry = dict(grid.get("base", {}), **dict(zip(points, combo)), **extra)
            out.append({k: v.format(**fill) if isinstance(v, str) else v for k, v in entry.items()})
    return out


def _one(options: dict, explicit: list, threads):
    """Worker: one run (a loky process, a thread, a dask worker); returns (run folder, None) or (None, error)."""
    if threads:
        import torch
        torch.set_num_threads(threads)  # the most a large head may take (--threads 0); small heads use one
    from glag.classify.run import run_stage2   # absolute: a dask worker imports this function by name
    try:
        return str(run_stage2(options, explicit, resume=True, progress=False)), None
    except GlagError as e:
        return None, str(e)


def run_sweep(grid_spec: str, base: dict, jobs: int = 2, out: str = "auto", backend: str = "loky",
              scheduler: str = "", mixed_banks: bool = False) -> tuple[list, Path]:
    """Run every configuration of a grid; write table.md and table.csv.

    Args:
        grid_spec: shipped grid name or JSON path.
        base: options common to all runs (bank, dataset, runs_root, loss options...).
        jobs: runs at a time (loky: processes, each with cpu_count // jobs torch threads).
        out: folder of the table; auto: <first run's bank folder>/stage2/sweeps/<grid name>.
        backend, scheduler: where the runs execute (glag.parallel: loky, threading, dask [at an address]).
        mixed_banks: compare banks that differ in more than the stage-one loss (rows then name how).
    Returns:
        (run folders, table folder).
    """
    name, configs = _configs(grid_spec, base)
    missing = sorted({o["bank"] for o, _ in configs if not Path(o["bank"]).is_file()})
    if missing:
        raise GlagError(f"--grid {name}: bank(s) not found: {missing}; build them first: "
                        + "; ".join(make_features(Path(m)) for m in missing))
    banks = sorted({o["bank"] for o, _ in configs})
    tags = check_banks(name, banks, mixed_banks)
    check_stores(name, configs)
    results = _execute(configs, name, jobs, backend, scheduler)
    varying = {k for _, e in configs for k in e if len({json.dumps(o.get(k)) for o, _ in configs}) > 1}
    done = [(Path(r), label(describe(o, varying & set(e)), tags[o["bank"]]))
            for (r, _), (o, e) in zip(results, configs) if r]
    errors = list(dict.fromkeys(err for _, err in results if err))     # the same cause once
    if not done:
        raise GlagError(f"--grid {name}: all {len(configs)} runs failed, no table written: " + " | ".join(errors))
    folder = Path(configs[0][0]["bank"]).parent / "stage2" / "sweeps" / name if out == "auto" else Path(out)
    runs = [r for r, _ in done]
    write_tables(folder, runs, banks, [text for _, text in done])
    if errors:
        failed = sum(1 for _, err in results if err)
        raise GlagError(f"--grid {name}: {failed} of {len(configs)} runs failed; the table of the other "
                        f"{len(done)} is in {folder}: " + " | ".join(errors))
    return runs, folder


def label(text: str, tag: str) -> str:
    """A row's label: the run's own settings, then its bank's where the banks differ (--mixed-banks, seeds)."""
    return f"{text} [{tag}]" if tag else text


def _execute(configs: list, name: str, jobs: int, backend: str, scheduler: str) -> list:
    """[(run folder, None) or (None, error)] per config, run `jobs` at a time on the joblib backend."""
    from joblib import Parallel, delayed

    from glag.parallel import backend as parallel_backend, threads_per_run
    threads = threads_per_run(backend, jobs)
    with parallel_backend(backend, scheduler, jobs):
        click.echo(f"sweep {name}: {len(configs)} runs, {jobs} at a time ({backend})", err=True)
        return Parallel(n_jobs=jobs)(delayed(_one)(o, e, threads) for o, e in configs)


def _configs(grid_spec: str, base: dict) -> tuple[str, list]:
    """(grid name, [(full options, keys the grid set)]) with every bank resolved to a path."""
    name, grid = load_grid(grid_spec)
    from .options import loss_option_specs
    base = dict(base)
    im = base.pop("im", None)                                  # fills {experiment}; not a run option
    known = dict(defaults({k: v for k, (v, _) in loss_option_specs().items()}), **base)
    dataset = base.get("dataset") or os.environ.get("DATASET", "")
    fill = {"dataset": dataset, "runs_root": base["runs_root"],
            "experiment": experiment(base["runs_root"], dataset, im, grid, name)}
    configs = []
    params = _run_params()
    for number, entry in enumerate(expand(grid, name, known, fill), 1):
        check_entry(entry, params, f"--grid {name}, run {number}")
        options = {**known, "plots": False, "deploy": False, **entry}   # a grid may still ask for plots
        options["bank"] = str(resolve_bank(options["bank"] or None, options["dataset"] or None, options["runs_root"],
                                           say=False))
        configs.append((options, sorted(entry)))
    return name, configs


def _run_params() -> dict:
    from .cli import run as run_command
    return {p.name: p for p in run_command.params}


def check_entry(entry: dict, params: dict, where: str) -> None:
    """Every value of a grid entry through the option's own click type: a grid is refused as a whole, with
    `glag-classify run`'s message, before its first run starts."""
    import click
    for key, value in entry.items():
        param = params.get(key)
        if param is None or value is None or isinstance(param.type, click.types.BoolParamType):
            continue
        try:
            param.type.convert(value, param, None)
        except click.BadParameter as e:
            raise GlagError(f"{where}: {key} = {value!r}: {e.format_message()}") from None


def experiment(runs_root, dataset: str, im, grid: dict, name: str) -> str:
    """<dataset>-im<IM> for the {experiment} placeholder: from --im, else the one such folder under runs_root."""
    if "{experiment}" not in json.dumps(grid):
        return ""
    if not dataset:
        raise GlagError(f"--grid {name}: its banks are per dataset; pass --dataset (or set $DATASET)")
    if im:
        return experiment_name(dataset, im)
    found = sorted(p.name for p in Path(runs_root).glob(f"{dataset}-*") if p.is_dir())
    if len(found) == 1:
        return found[0]
    raise GlagError(f"--grid {name}: {'several' if found else 'no'} experiments of {dataset} under {runs_root}/ "
                    f"({', '.join(found) or 'none'}); pass --im, or build the banks with "
                    f"`make features DATASET={dataset} LOSS=<loss>`")


def make_features(bank: Path) -> str:
    """The `make features` that writes a bank of the standard layout (glag.data.layout), else a generic hint."""
    parts = bank.parts
    if bank.name == "bank.h5" and len(parts) >= 4 and parts[-2].startswith("seed") and "-im" in parts[-4]:
        dataset, im = parts[-4].rsplit("-im", 1)
        return f"`make features DATASET={dataset} IM={im} LOSS={parts[-3]} SEED={parts[-2][4:]}`"
    return f"`glag-extract ... --out {bank}`"


def describe(options: dict, keys) -> str:
    """A table label: the method, then this run's values of the options in `keys` (bank and method left out)."""
    rest = ", ".join(f"{k}={options[k]}" for k in sorted(keys) if k not in ("method", "bank"))
    return f"{options['method']} {rest}".strip()


def write_tables(folder: Path, runs: list, banks: list, labels=None) -> None:
    """table.md (val and test, stage-one rows first) and table.csv, each written atomically."""
    text = "\n".join(markdown(runs, split, banks, labels) for split in ("val", "test") if _has(runs, split))
    for fname, body in (("table.md", text), ("table.csv", csv_text(runs, labels=labels))):
        with atomic_file(folder / fname) as tmp:
            tmp.write_text(body)


def _has(runs, split) -> bool:
    from .table import load_metrics
    return all(load_metrics(r).get(split) for r in runs)
