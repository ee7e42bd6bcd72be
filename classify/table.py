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


def run_info(run) -> dict:
    """Who a finished run is: name, whether its user named it, method, resolved options, its bank's config."""
    config = json.loads((Path(run) / "config.json").read_text())
    cfg, bank = config.get("cfg", {}), (config.get("upstream") or {}).get("bank") or {}
    summary = load_metrics(run).get("summary", {})
    return {"run": Path(run), "name": summary.get("run", Path(run).name), "named": cfg.get("run") not in ("auto", None),
            "method": cfg.get("method", summary.get("method")), "cfg": cfg, "bank_loss": summary.get("bank_loss", "?"),
            "bank": bank.get("config") or {"dataset": bank.get("dataset")}}


def experiment(bank_cfg: dict) -> str:
    """A bank's data in words: `<dataset> IM <im>`, or `<dataset> (listed)`."""
    dataset = bank_cfg.get("dataset") or "?"
    if bank_cfg.get("profile") == "listed" or bank_cfg.get("im") is None:
        return f"{dataset} (listed)" if bank_cfg.get("profile") == "listed" else dataset
    return f"{dataset} IM {float(bank_cfg['im']):g}"


def default_labels(infos: list) -> list:
    """Row labels: the name a user gave, else (a sweep's hash-named run) the method and the options in which
    the hash-named runs shown differ; then the bank's settings in which the rows' banks differ."""
    from .sweep_inputs import bank_tag, differences
    hashed = [i for i in infos if not i["named"]]
    varying = sorted(k for k in {k for i in hashed for k in i["cfg"]} - _NOT_LABELS
                     if len({json.dumps(i["cfg"].get(k), sort_keys=True) for i in hashed}) > 1)
    bank_keys = [k for k in differences({str(n): i["bank"] for n, i in enumerate(infos)})
                 if k not in ("dataset", "im", "profile", "data_fingerprint")]
    if len({str(i["bank"].get("seed")) for i in infos}) > 1:
        bank_keys = ["seed"] + bank_keys
    out = []
    for i in infos:
        own = ", ".join(f"{k}={i['cfg'].get(k)}" for k in varying)
        name = i["name"] if i["named"] else f"{i['method']} {own}".strip()
        tag = bank_tag(i["bank"], bank_keys)
        out.append(f"{name} [{tag}]" if tag else name)
    return out


# options that say where a run went or how it ran, never what it is: not used to label rows
_NOT_LABELS = frozenset({"bank", "store", "run", "out", "overwrite", "plots", "deploy", "tsne_classes", "device",
                         "threads", "runs_root", "tensorboard", "dataset", "method"})


def run_rows(runs, split: str, labels=None) -> dict:
    """{"<label> (<stage-one loss> bank)": accuracy dict on `split`}; labels default to `default_labels`."""
    infos = [run_info(r) for r in runs]
    labels = labels or default_labels(infos)
    rows = {}
    for info, text in zip(infos, labels):
        m = load_metrics(info["run"])
        if m.get(split) is None:
            raise GlagError(f"{info['run']}: no {split!r} metrics (the bank had no {split} split); try --split test")
        _add(rows, f"{text} ({info['bank_loss']} bank)", m[split], str(info["run"]))
    return rows


def markdown(runs, split: str = "test", banks=(), labels=None) -> str:
    """The markdown table: stage-one rows of `banks` first, then one row per run (`labels` name them).

    Runs of different data (dataset or IM) never share a table: one table each, titled with the data.
    """
    from glag.data.layout import bank_config
    groups = {}
    for n, run in enumerate(runs):
        groups.setdefault(experiment(run_info(run)["bank"]), []).append(n)
    parts = []
    for data, members in groups.items():
        mine = [b for b in banks if len(groups) == 1 or experiment(bank_config(b)) == data]
        rows = dict(stage_one_rows(mine, split),
                    **run_rows([runs[n] for n in members], split, [labels[n] for n in members] if labels else None))
        title = f"Top-1 accuracy (%) on {split}" + (f", {data}" if len(groups) > 1 else "")
        parts.append(format_table(rows, title=title))
    return "\n".join(parts)


def csv_text(runs, splits=("val", "test"), labels=None) -> str:
    """One line per run: name, label, summary, data, then overall/many/medium/few per split (fractions)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(("run", "label") + LABELS + ("data",) + tuple(f"{s}_{c}" for s in splits for c in COLUMNS))
    for i, run in enumerate(runs):
        m = load_metrics(run)
        summary = m.get("summary", {})
        accs = [(m.get(s) or {}).get(c) for s in splits for c in COLUMNS]
        w.writerow([summary.get("run", Path(run).name), labels[i] if labels else ""]
                   + [summary.get(k, "") for k in LABELS] + [experiment(run_info(run)["bank"])]
                   + ["" if a is None else f"{a:.4f}" for a in accs])
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
