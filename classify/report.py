"""report.md of a run folder, from its result files only (config, metrics, history, beta)."""
import json
from pathlib import Path

import click

from glag.data.splits import format_table
from glag.extras import install_hint

DEPLOY = """## Using the head

- `head.pt`: the head's state dict, `{names}`
  (`HEADS["{head}"](ctx, ...).load_state_dict(torch.load("head.pt", weights_only=True))`).
{linear}{model}"""


def _read(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _accuracy(metrics: dict) -> str:
    rows = {}
    for split in ("val", "test"):
        if metrics.get(split):
            rows[f"stage two, {split}"] = metrics[split]
        if (metrics.get("stage1") or {}).get(split):
            rows[f"stage one, {split}"] = metrics["stage1"][split]
    return format_table(rows)


def _beta(beta: dict | None) -> str:
    if not beta:
        return ""
    traj = beta["trajectory"]
    final = beta.get("final") or traj[-1]
    how = f"adaptive, rule {beta.get('rule')}" if beta["adaptive"] else "fixed"
    refit = ("; the head was then trained again with the final betas (the mean of the search's last part)"
             if beta.get("refit") else "")
    lines = [f"## Confidence beta ({how}), {len(beta['tail_classes'])} tail classes{refit}\n",
             "| class | start | end of search | final | min | max |", "|---|---|---|---|---|---|"]
    for j, name in enumerate(beta["class_names"][:30]):
        col = [row[j] for row in traj]
        lines.append(f"| {name} | {col[0]:.2f} | {col[-1]:.2f} | {final[j]:.2f} | {min(col):.2f} | {max(col):.2f} |")
    return "\n".join(lines) + ("\n\n(first 30 shown; all in beta.json)\n" if len(beta["class_names"]) > 30 else "\n")


def _history(history: list) -> str:
    if not history:
        return ""
    every = max(1, len(history) // 10)
    lines = ["## Training\n", "| epoch | lr | alpha | rows | loss | ce | kd | val |",
             "|---|---|---|---|---|---|---|---|"]
    for h in history[::every] + ([history[-1]] if (len(history) - 1) % every else []):
        val = h.get("val_overall")
        lines.append(f"| {h['epoch']} | {h['lr']:.4f} | {h['alpha']:.3f} | {h['rows']} | {h['loss']:.4f} | "
                     f"{h['ce']:.4f} | {h['kd']:.4f} | {'-' if val is None else f'{100 * val:.1f}'} |")
    return "\n".join(lines) + "\n"


def write_report(folder, plots: bool = True) -> Path:
    """Write report.md (and the PNG plots when `plots`) into a run folder; returns the report's path."""
    folder = Path(folder)
    config, metrics = _read(folder, "config.json"), _read(folder, "metrics.json")
    cfg, summary = config["cfg"], metrics["summary"]
    images = []
    if plots:
        from .plots import make_plots
        try:
            images = make_plots(folder)
        except ImportError:
            click.echo(f"plots skipped: matplotlib is not installed ({install_hint('plots')})", err=True)
    bank = config["upstream"]["bank"]
    parts = [f"# Stage-two run {summary['run']}\n",
             f"method **{cfg['method']}**: head `{cfg['head']}`, loss `{cfg['loss']}`, sampler `{cfg['sampler']}`, "
             f"synthetic {cfg['synthetic']}, AD {cfg['ad']}, KD {cfg['kd']}, space `{cfg['space']}`, "
             f"{cfg['epochs']} epochs, {cfg.get('views', 0)} augmented views.\n", f"Bank: `{bank['path']}` ({bank['dataset']}, {bank['backbone']}, "
             f"stage-one loss {bank['loss']}, fingerprint {bank['fingerprint']}).",
             f"Store: `{cfg['store'] or 'none'}`. Code: {config['code_version']}.\n",
             "## Accuracy (%)\n", _accuracy(metrics)]
    if metrics.get("notes"):
        parts.append("## Notes\n\n" + "\n".join(f"- {note}" for note in metrics["notes"]) + "\n")
    if metrics.get("calibration"):
        parts.append(f"Calibration: `{json.dumps(metrics['calibration'], sort_keys=True)[:400]}`\n")
    parts += [_beta(_read(folder, "beta.json")), _history(_read(folder, "history.json"))]
    parts += [f"![{name}]({name})\n" for name in images]
    parts.append(_deploy(folder, cfg, metrics.get("deploy")))
    path = folder / "report.md"
    path.write_text("\n".join(p for p in parts if p))
    return path


def _deploy(folder: Path, cfg: dict, status: dict | None) -> str:
    import torch
    names = ", ".join(sorted(torch.load(folder / "head.pt", weights_only=True)))
    linear = ("- `linear.pt`: `{\"weight\": (C, D), \"bias\": (C,)}`, a linear layer with the same predictions on raw "
              "features: `nn.Linear(D, C).load_state_dict(torch.load(\"linear.pt\", weights_only=True))`.\n"
              if (folder / "linear.pt").is_file() else "")
    if (folder / "model.pt").is_file():
        model = ("- `model.pt`: stage one's backbone with this head, self-describing (backbone, input size, "
                 f"normalisation, head space `{cfg['space']}`): "
                 "`from glag.extract.backbones import load_deployed; model = load_deployed(\"model.pt\")`, "
                 "then `model(images)` with images (B, Cin, H, W) in [0, 1].\n")
    else:
        model = f"- no `model.pt`: {(status or {}).get('reason') or 'not written'}.\n"
    return DEPLOY.format(names=names, head=cfg["head"], linear=linear, model=model)
