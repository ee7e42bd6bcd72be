"""Stage two at the shapes users name: CIFAR-100-LT, ImageNet-LT, iNaturalist 2018 (issue 19).

    python bench/bench_scale.py [--shapes cifar100-lt,imagenet-lt,inat2018] [--device cpu|cuda] [--dry-run]

For each shape it writes a bank of that shape (glag.generate.toybank.write_shaped_bank: random
class-clustered rows, the real counts and width, a stage-one head and its logits, 8 float16
views for ImageNet-LT) under --work, then runs, each as its own process (wall time and peak RSS
from os.wait4): glag-generate with its defaults; glag-classify run with GLAG's defaults, cRT,
post-hoc LA and tau-norm; and GLAG / cRT on the views. Where a step would take hours on the CPU
(--max-epochs below 40) it runs that many epochs and projects 40 from the epochs' own seconds
(history.json), and the table says "projected". Figures go to <out>/scale.json and scale.md.
Timings on a shared machine are noisy: compare the rows of one run.
"""
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
GiB = 2 ** 30
FULL_EPOCHS = 40


def steps(shape: str, views: int, epochs: int) -> list:
    """(name, tool module, args) of one shape; `epochs` < 40 runs the trained heads that long and projects."""
    e = ["--epochs", str(epochs)]
    out = [("generate (defaults)", "glag.generate.cli", []),
           ("GLAG (defaults)", "glag.classify.cli", ["run", "--views", "0", *e]),
           ("post-hoc LA", "glag.classify.cli", ["run", "--method", "posthoc_la"]),
           ("cRT", "glag.classify.cli", ["run", "--method", "crt", "--views", "0", *e]),
           ("tau-norm", "glag.classify.cli", ["run", "--method", "tau_norm"])]
    if views:
        out += [(f"cRT, {views} fp16 views", "glag.classify.cli", ["run", "--method", "crt", *e]),
                (f"GLAG, {views} fp16 views", "glag.classify.cli", ["run", *e])]
    return out


def measure(module: str, args: list, log: Path, env: dict) -> dict:
    """Run `python -c 'from module import main; main()' args`; wall seconds, peak RSS (GiB), exit code."""
    cmd = [sys.executable, "-c", f"from {module} import main; main()", *args]
    started = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.time() - started, "peak_gib": usage.ru_maxrss * 1024 / GiB, "exit": proc.returncode}


def run_folder(log: Path) -> Path | None:
    """The run folder a glag-classify log names ("wrote <folder>")."""
    lines = [l for l in log.read_text().splitlines() if l.startswith("wrote ")]
    return Path(lines[-1][len("wrote "):]) if lines else None


def project(result: dict, folder: Path | None, epochs: int) -> dict:
    """Seconds a 40-epoch run would take: the measured run minus its epochs, plus 40 epochs per pass at the
    mean seconds of the epochs run (AD's search and refit passes separately)."""
    if folder is None or epochs >= FULL_EPOCHS:
        return result
    history = json.loads((folder / "history.json").read_text())
    if not history:
        return result
    spent = sum(h["seconds"] for h in history)
    passes = {}
    for h in history:
        passes.setdefault(h.get("pass", "fit"), []).append(h["seconds"])
    full = sum(FULL_EPOCHS * sum(s) / len(s) for s in passes.values())
    return dict(result, measured_seconds=result["seconds"], epochs_run=epochs,
                seconds=result["seconds"] - spent + full, projected=True)


def bank_for(shape: str, work: Path, views: int, device: str) -> Path:
    from glag.generate.toybank import write_shaped_bank
    path = work / shape / "bank.h5"
    if not path.is_file():
        click.echo(f"writing a {shape}-shaped bank ({views} views) to {path} ...", err=True)
        started, last = time.time(), [0.0]

        def tick(done, total):
            if time.time() - last[0] > 10:
                click.echo(f"  bank rows {done:,}/{total:,} ({time.time() - started:.0f}s)", err=True)
                last[0] = time.time()
        write_shaped_bank(path, shape, views=views, progress=tick, device=device)
        click.echo(f"  written in {time.time() - started:.0f}s", err=True)
    return path


def bench_shape(shape: str, work: Path, device: str, views: int, epochs: int, deadline: float) -> list:
    bank = bank_for(shape, work, views, device)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rows = []
    for name, module, args in steps(shape, views, epochs):
        if time.time() > deadline:
            rows.append(dict(shape=shape, step=name, exit=0, skipped=True, seconds=0.0, peak_gib=0.0, tail=[]))
            click.echo(f"{shape}: {name} skipped (--budget spent)", err=True)
            continue
        log = work / shape / f"{name.replace(' ', '_').replace(',', '').replace('(', '').replace(')', '')}.log"
        common = ["--bank", str(bank)] + (["--force"] if module.endswith("generate.cli") else
                                          ["--overwrite", "--no-plots", "--no-deploy", "--device", device])
        click.echo(f"{shape}: {name} ...", err=True)
        result = measure(module, [*args, *common], log, env)
        if module.endswith("classify.cli") and result["exit"] == 0:
            result = project(result, run_folder(log), epochs if "--epochs" in args else FULL_EPOCHS)
            folder = run_folder(log)
            if folder is not None:
                result["test_overall"] = json.loads((folder / "metrics.json").read_text())["test"]["overall"]
        if module.endswith("generate.cli") and result["exit"] == 0:
            store = Path(log.read_text().strip().splitlines()[-1])
            result["store_gib"] = store.stat().st_size / GiB
            result["bank_train_gib"] = train_split_bytes(bank) / GiB
        result.update(shape=shape, step=name, log=str(log), tail=log.read_text().strip().splitlines()[-1:])
        rows.append(result)
        click.echo(f"  {result['seconds']:.0f}s, peak {result['peak_gib']:.2f} GiB, exit {result['exit']}", err=True)
    return rows


def train_split_bytes(bank: Path) -> int:
    """Bytes of the bank's train split as stored (features, labels, logits, index)."""
    import h5py
    with h5py.File(bank, "r") as f:
        return sum(f[f"train/{k}"].id.get_storage_size() for k in f["train"])


def write(rows: list, out: Path, device: str):
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": device, "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "commit": _commit()}
    (out / "scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"Stage two at scale on {device} ({meta['cores']} cores, commit {meta['commit']}); wall time and peak "
             "RSS per step, each step its own process.", "",
             "| shape | step | wall | peak RSS | store / train split | test acc | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['store_gib']:.2f} / {r['bank_train_gib']:.2f} GiB" if "store_gib" in r else ""
        if r.get("skipped"):
            lines.append(f"| {r['shape']} | {r['step']} | | | | | skipped: the --budget was spent |")
            continue
        note = "failed: " + " ".join(r["tail"]) if r["exit"] else \
            (f"projected from {r['epochs_run']} epoch(s) per pass ({_fmt(r['measured_seconds'])} measured)"
             if r.get("projected") else "")
        acc = f"{100 * r['test_overall']:.1f}" if "test_overall" in r else ""
        lines.append(f"| {r['shape']} | {r['step']} | {_fmt(r['seconds'])} | {r['peak_gib']:.2f} GiB | {size} | "
                     f"{acc} | {note} |")
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@click.command()
@click.option("--shapes", default="cifar100-lt,imagenet-lt,inat2018", show_default=True)
@click.option("--work", type=click.Path(file_okay=False), default="runs/bench-scale", show_default=True,
              help="Where the banks, stores and runs go (several GB at ImageNet-LT shape, ~20 GB at iNat's).")
@click.option("--out", type=click.Path(file_okay=False), default="bench/results", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--views", default=8, show_default=True, help="float16 views in the ImageNet-LT-shaped bank.")
@click.option("--max-epochs", default="cifar100-lt=40,imagenet-lt=40,inat2018=1", show_default=True,
              help="Stage-two epochs actually run per shape; fewer than 40 are projected to 40.")
@click.option("--budget", default=0.0, show_default=True,
              help="Seconds after which the remaining steps are skipped (and say so); 0 = no limit.")
@click.option("--dry-run", is_flag=True, help="A CIFAR-100-LT-shaped bank only, 1 epoch (CI's smoke test).")
def main(shapes, work, out, device, views, max_epochs, budget, dry_run):
    """Write a bank of each shape, run generate and classify on it, and tabulate wall time and peak RSS."""
    epochs = {k: int(v) for k, v in (p.split("=") for p in max_epochs.split(","))}
    names = ["cifar100-lt"] if dry_run else shapes.split(",")
    deadline = time.time() + budget if budget > 0 else float("inf")
    rows = []
    for shape in names:
        n = 1 if dry_run else epochs.get(shape, FULL_EPOCHS)
        rows += bench_shape(shape, Path(work), device, views if shape == "imagenet-lt" else 0, n, deadline)
    write(rows, Path(out), device)
    if any(r["exit"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
