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
