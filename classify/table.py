"""Comparison tables of finished runs (markdown for people, CSV for scripts); reads result files only."""
import csv
import io
import json
from pathlib import Path

from glag.data.errors import GlagError
from glag.data.splits import GROUPS, format_table

COLUMNS = ("overall",) + GROUPS
LABELS = ("method", "head", "bank_loss", "synthetic", "ad", "kd")


def load_metrics(run: Path) -> dict:
    path = Path(run) / "metrics.json"
    if not path.is_file():
        raise GlagError(f"{run}: no metrics.json; not a finished stage-two run folder")
    return json.loads(path.read_text())


def bank_of(run: Path) -> str:
    """The bank a finished run was trained on (its config.json), for the stage-one row beside it."""
    path = Path(run) / "config.json"
    try:
        return json.loads(path.read_text())["cfg"]["bank"]
    except (OSError, ValueError, KeyError) as e:
        raise GlagError(f"{path}: cannot read the run's bank ({type(e).__name__}); is {run} a finished run?") from None


def _add(rows: dict, label: str, value, where: str) -> None:
    """rows[label] = value; a label already taken (two banks of one loss, two runs of one name) gets
    `where` appended, so no row silently replaces another."""
    if label in rows:
        label = f"{label[:-1]}, {where})"
    rows[label] = value


def stage_one_rows(banks, split: str) -> dict:
    """{"stage one (<loss> bank)": accuracy dict} from each bank's stage1 metrics, labelled like run rows."""
    from glag.data.bank import Bank
    rows = {}
    for path in dict.fromkeys(str(b) for b in banks):  # a bank named twice is one row
        with Bank(path) as bank:
            acc = bank.metrics.get(split)
            if acc:
                _add(rows, f"stage one ({bank.loss} bank)", acc, str(Path(path).parent))
    return rows


def run_rows(runs, split: str, labels=None) -> dict:
    """{"<label or run name> (<stage-one loss> bank)": accuracy dict on `split`}."""
    rows = {}
    for i, run in enumerate(runs):
        m = load_metrics(run)
        if m.get(split) is None:
            raise GlagError(f"{run}: no {split!r} metrics (the bank had no {split} split); try --split test")
        summary = m.get("summary", {})
        name = labels[i] if labels else summary.get("run", Path(run).name)
        _add(rows, f"{name} ({summary.get('bank_loss', '?')} bank)", m[split], str(run))
    return rows


def markdown(runs, split: str = "test", banks=(), labels=None) -> str:
    """The markdown table: stage-one rows of `banks` first, then one row per run (`labels` name them)."""
    rows = dict(stage_one_rows(banks, split), **run_rows(runs, split, labels))
    return format_table(rows, title=f"Top-1 accuracy (%) on {split}")


def csv_text(runs, splits=("val", "test"), labels=None) -> str:
    """One line per run: name, label, summary, then overall/many/medium/few per split (fractions)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(("run", "label") + LABELS + tuple(f"{s}_{c}" for s in splits for c in COLUMNS))
    for i, run in enumerate(runs):
        m = load_metrics(run)
        summary = m.get("summary", {})
        accs = [(m.get(s) or {}).get(c) for s in splits for c in COLUMNS]
        w.writerow([summary.get("run", Path(run).name), labels[i] if labels else ""]
                   + [summary.get(k, "") for k in LABELS] + ["" if a is None else f"{a:.4f}" for a in accs])
    return buf.getvalue()


def find_runs(paths) -> list:
    """The finished run folders among `paths` and, for a folder that is not one, every one below it.

    A run folder holds metrics.json and config.json; hidden folders (an unfinished run's atomic temp
    copy) are skipped. Order: as given, each folder's runs sorted; a run reached twice counts once.
    """
    found = []
    for path in map(Path, paths):
        runs = [path] if _is_run(path) else sorted(
            m.parent for m in path.rglob("metrics.json")
            if _is_run(m.parent) and not any(p.startswith(".") for p in m.relative_to(path).parts))
        if not runs:
            raise GlagError(f"{path}: no metrics.json in or under it; not a finished stage-two run folder nor a folder "
                            "holding one")
        found += runs
    return list(dict.fromkeys(found))


def _is_run(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "config.json").is_file()


def result_row(run) -> dict:
    """One flat row for a results table: who the run is, its accuracies, then every knob of its config.

    Keys: run (folder), name, method, dataset, bank, bank_loss, bank_seed (stage one's), seed (stage
    two's), {val,test}_{overall,many,medium,few} (fractions; None without that split or group),
    then the rest of config.json's cfg (scalar options only; stage two's `loss` among them).
    """
    run = Path(run)
    metrics = load_metrics(run)
    config = json.loads((run / "config.json").read_text())
    cfg, summary = config.get("cfg", {}), metrics.get("summary", {})
    stage_one = ((config.get("upstream") or {}).get("bank") or {}).get("config") or {}
    row = {"run": str(run), "name": summary.get("run", run.name), "method": cfg.get("method"),
           "dataset": cfg.get("dataset") or stage_one.get("dataset"), "bank": cfg.get("bank"),
           "bank_loss": summary.get("bank_loss", stage_one.get("loss")), "bank_seed": stage_one.get("seed"),
           "seed": cfg.get("seed")}
    row.update({f"{s}_{c}": (metrics.get(s) or {}).get(c) for s in ("val", "test") for c in COLUMNS})
    row.update({k: v for k, v in cfg.items() if k not in row and (v is None or isinstance(v, (str, int, float)))})
    return row
