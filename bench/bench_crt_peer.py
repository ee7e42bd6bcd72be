"""cRT the peer way (frozen backbone over the images every epoch) versus from the feature bank, in one run.

CIFAR-10-LT (IM 100, the JPEG copy under --data-root), ResNet-32, a linear head trained
class-balanced with SGD for --epochs epochs, both ways in the same process:

  peer   what decoupling repos do for cRT: every epoch a torch DataLoader with per-image PIL
         transforms (RandomCrop 32 pad 4, RandomHorizontalFlip, ToTensor, Normalize) and a
         class-balanced WeightedRandomSampler feeds the frozen NCHW backbone (eval mode, no grad),
         and only the head learns; at the end one pass over val + test evaluates it.
  bank   GLAG: the backbone runs once over train, val and test (glag.extract.dump.dump_bank, the
         feature dump of glag-extract), then `glag-classify run --method crt` trains on the cached
         features (glag.classify.run.run_stage2, the real code path) and evaluates on val and test.

Reported: seconds per epoch both ways and their ratio; the dump separately; the totals of
E epochs including the one dump (and evaluation) both ways; the same projected to 40 epochs
(the stage-two default) from the measured per-epoch times; and the epochs after which the dump
has paid for itself. The backbone is random unless --checkpoint names a stage-one checkpoint:
time per epoch does not depend on the weights' values (denormals are flushed, as glag-extract
does), only the accuracies do. Writes bench/results/classify_peer.json and classify_peer.md.

    make data-cifar10 && python bench/bench_crt_peer.py --data-root datasets [--checkpoint runs/x/bank.ckpt.pt]
"""
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from glag.classify.config import defaults
from glag.classify.options import loss_option_specs
from glag.classify.run import run_stage2
from glag.data.datasets import load_dataset
from glag.data.longtail import make_long_tail
from glag.data.provenance import code_version
from glag.extract.backbones import Classifier, build_backbone
from glag.extract.checkpoint import load_checkpoint
from glag.extract.distributed import Context
from glag.extract.dump import dump_bank
from glag.extract.loaders import Images
from glag.extract.pipeline import resolve_config

RESULTS = Path(__file__).resolve().parent / "results"
PROJECTED_EPOCHS = 40


def build_model(num_classes: int, checkpoint: str) -> Classifier:
    """ResNet-32 Classifier: a stage-one checkpoint's weights, else random (seed 0)."""
    torch.manual_seed(0)
    model = Classifier(build_backbone("resnet32", 3, 32), num_classes)
    if checkpoint:
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
    for p in model.parameters():
        p.requires_grad_(False)  # frozen: cRT trains the head only
    return model.eval()


def peer_loader(split, cfg, batch_size: int, workers: int, train: bool, seed: int = 0):
    """A peer-style DataLoader: per-image PIL transforms; class-balanced sampling when training."""
    from PIL import Image
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    tf = T.Compose(steps + [T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])

    class PeerSet(torch.utils.data.Dataset):                 # torchvision.datasets.CIFAR10's __getitem__
        def __len__(self):
            return len(split)

        def __getitem__(self, i):
            return tf(Image.fromarray(split.images[i])), int(split.labels[i])

    sampler = None
    if train:  # the ClassAwareSampler / 1/N_y-weighted sampler of decoupling repos
        weights = 1.0 / np.bincount(split.labels)[split.labels]
        sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), len(split), replacement=True,
                                                         generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(PeerSet(), batch_size=batch_size, sampler=sampler, shuffle=False,
                                       num_workers=workers, persistent_workers=workers > 0)


class PeerCRT:
    """cRT the peer way: a linear head on the frozen backbone, the images through it every epoch."""

    def __init__(self, model, data, cfg, epochs: int, batch_size: int, workers: int, lr: float):
        torch.manual_seed(0)
        self.model, self.data, self.cfg, self.workers = model, data, cfg, workers
        self.head = torch.nn.Linear(model.feature_dim, data.num_classes)
        self.opt = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, epochs)
        self.loader = peer_loader(data.train, cfg, batch_size, workers, train=True)

    def train_epoch(self) -> float:
        """One epoch; returns its wall seconds."""
        started = time.perf_counter()
        for x, y in self.loader:
            with torch.no_grad():
                f = self.model.features(x)                                   # (B, D), frozen backbone
            loss = torch.nn.functional.cross_entropy(self.head(f), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self.sched.step()
        return time.perf_counter() - started

    def evaluate(self) -> tuple[float, float]:
        """One pass over val + test; returns (seconds, test accuracy)."""
        started, hits, rows = time.perf_counter(), 0, 0
        for name in ("val", "test"):
            for x, y in peer_loader(getattr(self.data, name), self.cfg, 256, self.workers, train=False):
                with torch.no_grad():
                    pred = self.head(self.model.features(x)).argmax(1)
                if name == "test":
                    hits, rows = hits + int((pred == y).sum()), rows + len(y)
        return time.perf_counter() - started, hits / max(rows, 1)


def dump(model, data, cfg, work: Path) -> tuple[Path, dict]:
    """The one feature dump of the bank way, as glag-extract does it (channels_last)."""
    model = model.to(memory_format=torch.channels_last)
    splits = {s: Images(getattr(data, s), 3, 32) for s in ("train", "val", "test")}
    bank = work / "bank.h5"
    started = time.perf_counter()
    dump_bank(model, data, splits, cfg, Context(torch.device("cpu")), bank, log=lambda *a, **k: None)
    return bank, {"dump_s": time.perf_counter() - started, "dump_rows": sum(len(s) for s in splits.values())}


def bank_crt(bank: Path, epochs: int, batch_size: int, lr: float) -> dict:
    """`glag-classify run --method crt` on the cached features (the classify trainer, in process)."""
    options = defaults({k: v for k, (v, _) in loss_option_specs().items()})
    options.update(bank=str(bank), method="crt", epochs=epochs, batch_size=batch_size, lr=lr, run="crt",
                   overwrite=True, plots=False, deploy=False)
    started = time.perf_counter()
    folder = run_stage2(options, {"method", "epochs", "batch_size", "lr"}, progress=False)
    run_s = time.perf_counter() - started
    history = json.loads((folder / "history.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"run_s": run_s, "epoch_s": [h["seconds"] for h in history], "test_accuracy": metrics["test"]["overall"]}


def measure(model, data, cfg, epochs, batch_size, workers, lr, work: Path) -> tuple[dict, dict, list]:
    """Both ways, interleaved (peer epoch, dump, peer epoch, bank run, peer epochs..., peer evaluation) so that
    load from other processes on a shared machine falls on both alike. Returns (peer, bank, load averages)."""
    peer, seconds, load = PeerCRT(model, data, cfg, epochs, batch_size, workers, lr), [], []
    bank, steps = {}, {1: "dump", 2: "run"}
    for step in range(max(epochs, 3)):
        if steps.get(step) == "dump":
            path, done = dump(model, data, cfg, work)
            bank.update(done)
            click.echo(f"dump: {done['dump_s']:.1f} s ({done['dump_rows'] / done['dump_s']:.0f} rows/s)", err=True)
        elif steps.get(step) == "run":
            bank.update(bank_crt(path, epochs, batch_size, lr))
        if step < epochs:
            seconds.append(peer.train_epoch())
            click.echo(f"peer epoch {step}: {seconds[-1]:.1f} s ({len(data.train) / seconds[-1]:.0f} img/s)", err=True)
        load.append(os.getloadavg()[0])
    eval_s, acc = peer.evaluate()
    return {"epoch_s": seconds, "eval_s": eval_s, "test_accuracy": acc}, bank, load


def summarise(peer: dict, bank: dict, epochs: int) -> dict:
    """Per-epoch ratio (medians), totals for E epochs with the dump, the same projected, break-even epochs."""
    p, b = float(np.median(peer["epoch_s"])), float(np.median(bank["epoch_s"]))
    fixed = bank["run_s"] - sum(bank["epoch_s"])                              # load bank, evaluate, write
    peer_total = sum(peer["epoch_s"]) + peer["eval_s"]
    bank_total = bank["dump_s"] + bank["run_s"]
    proj_peer = PROJECTED_EPOCHS * p + peer["eval_s"]
    proj_bank = bank["dump_s"] + fixed + PROJECTED_EPOCHS * b
    return {"peer_epoch_s": round(p, 3), "bank_epoch_s": round(b, 5), "ratio_per_epoch": round(p / b, 1),
            "measured_epochs": epochs, "peer_total_s": round(peer_total, 2), "bank_total_s": round(bank_total, 2),
            "ratio_including_dump": round(peer_total / bank_total, 2),
            "projected_epochs": PROJECTED_EPOCHS, "projected_peer_s": round(proj_peer, 1),
            "projected_bank_s": round(proj_bank, 1), "projected_ratio_including_dump": round(proj_peer / proj_bank, 2),
            "break_even_epochs": round(bank["dump_s"] / max(p - b, 1e-9), 2)}


@click.command()
@click.option("--data-root", type=click.Path(file_okay=False), default=None, show_default="$GLAG_DATA or ./datasets")
@click.option("--checkpoint", default="", show_default=True, help="Stage-one checkpoint (bank.ckpt.pt); empty: random.")
@click.option("--epochs", default=3, show_default=True, help="cRT epochs timed both ways.")
@click.option("--im", default=100.0, show_default=True, help="Imbalance ratio of CIFAR-10-LT.")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.2, show_default=True)
@click.option("--workers", default=2, show_default=True, help="DataLoader workers of the peer way.")
@click.option("--threads", default=1, show_default=True,
              help="torch threads of the main process (0: torch's default). 1 because on 2 shared cores a busy "
                   "neighbour made 2-thread convolutions 3x slower than 1 thread (threads wait on each other).")
@click.option("--out", type=click.Path(file_okay=False), default=str(RESULTS), show_default="bench/results")
def main(data_root, checkpoint, epochs, im, batch_size, lr, workers, threads, out):
    """Time cRT on CIFAR-10-LT the peer way and from the bank, and write the ratio."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as glag-extract does; a trained backbone must not be slowed by denormals
    raw = load_dataset("cifar10-jpeg", data_root)
    options = dict(dataset="cifar10-jpeg", loss="ce", out=None, batch_size=batch_size, epochs=200, lr=0.1,
                   warmup_epochs=5, momentum=None, weight_decay=None, sampler=None, crop_pad=None, flip=None,
                   cutout=None, seed=0, compile=False, dump_batch_size=256, groups=None, threads=threads,
                   workers=0, preload_mb=0, backbone="resnet32", im=im, profile=None, val_per_class=None)
    cfg = resolve_config(options, raw)
    data = make_long_tail(raw, cfg["profile"], im, cfg["val_per_class"], seed=0)
    model = build_model(data.num_classes, checkpoint)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        peer, bank, during = measure(model, data, cfg, epochs, batch_size, workers, lr, Path(tmp))
    load += during
    result = {"summary": summarise(peer, bank, epochs), "peer": peer, "bank": bank,
              "setup": {"dataset": "cifar10-jpeg", "im": im, "train_rows": len(data.train), "val_rows": len(data.val),
                        "test_rows": len(data.test), "batch_size": batch_size, "lr": lr, "workers": workers,
                        "weights": checkpoint or "random init (seed 0)", "threads": torch.get_num_threads()},
              "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                          "load_avg_1min": load, "code_version": code_version()}}
    write(Path(out), result)


def write(out: Path, r: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "classify_peer.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    s, su, m, p, b = r["setup"], r["summary"], r["machine"], r["peer"], r["bank"]
    md = (f"# cRT: the peer way vs from the bank (CPU, {m['cpus']} cores, torch {m['torch']}, "
          f"{s['threads']} threads)\n\n"
          f"CIFAR-10-LT IM {s['im']:g} from the JPEG copy: {s['train_rows']} train, {s['val_rows']} val, "
          f"{s['test_rows']} test images; ResNet-32 ({s['weights']}; time per epoch does not depend on the "
          f"weights, only the accuracies do), linear head, class-balanced, batch {s['batch_size']}, "
          f"{su['measured_epochs']} epochs each way, in one process; {s['threads']} torch thread(s) in the main "
          f"process (`--threads`), the peer DataLoader's workers on the other core.\n"
          f"Steps interleaved (peer epoch, dump, peer epoch, bank run, ...) so that other processes' load falls "
          f"on both ways alike; 1-min load average before and after each step: "
          f"{', '.join(f'{v:.1f}' for v in m['load_avg_1min'])}.\n\n"
          "| | seconds | per epoch (each) |\n|---|---|---|\n"
          f"| peer: frozen NCHW backbone over the images every epoch, per-image PIL crop/flip, DataLoader "
          f"x{s['workers']} | {sum(p['epoch_s']):.1f} | {', '.join(f'{t:.1f}' for t in p['epoch_s'])} |\n"
          f"| peer: final evaluation pass over val + test | {p['eval_s']:.1f} | |\n"
          f"| bank: the one feature dump (train + val + test, {b['dump_rows']} rows) | {b['dump_s']:.1f} | |\n"
          f"| bank: `glag-classify run --method crt` (load, train, evaluate, write) | {b['run_s']:.2f} | "
          f"{', '.join(f'{t:.3f}' for t in b['epoch_s'])} |\n\n"
          f"**Per epoch: {su['ratio_per_epoch']}x** ({su['peer_epoch_s']} s vs {su['bank_epoch_s']} s, medians).\n\n"
          f"**Including the one dump, {su['measured_epochs']} epochs: {su['ratio_including_dump']}x** "
          f"({su['peer_total_s']} s vs {su['bank_total_s']} s, evaluation included both ways).\n\n"
          f"Projected to {su['projected_epochs']} epochs from the per-epoch medians: {su['projected_peer_s']} s vs "
          f"{su['projected_bank_s']} s = {su['projected_ratio_including_dump']}x; the dump has paid for itself after "
          f"{su['break_even_epochs']} epochs, and every further stage-two run on the same bank skips it.\n\n"
          f"Test accuracy (a sanity check, not a comparison: the peer way trains on augmented crops, the bank way on "
          f"the one un-augmented dump, as classifier-balancing does): peer {100 * p['test_accuracy']:.1f}%, "
          f"bank {100 * b['test_accuracy']:.1f}%.\n")
    (out / "classify_peer.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
