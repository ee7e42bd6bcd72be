"""Stage-one throughput on CPU: GLAG's training step vs a peer-style reference loop, and the feature dump.

Both loops train ResNet-32 with SGD on CIFAR-10-LT (IM 100, from the JPEG copy
extracted under --data-root) with the same batch size and augmentation
(pad-4 random crop + horizontal flip + normalise), measured in one process:

  glag       uint8 images in memory, whole-batch tensor crop/flip, channels_last
             (glag.extract.loaders / glag.extract.augment / glag.extract.trainer, the real code path),
             in fp32 (the default on CPU), with --amp bf16 (AMX / AVX512-BF16 CPUs), and
             each of those with --compile (torch.compile; needs a C++ compiler, warms up once)
  reference  what peer repos do: NCHW model, per-image PIL transforms
             (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize) in a torch
             DataLoader over in-memory arrays (torchvision's CIFAR dataset style)

Each loop runs in its own process (GLAG's set up as glag-extract sets itself up,
the reference with the default allocator), and rounds alternate between them;
the median and the best round are reported (on
a shared machine the best round is the least disturbed one).
Then the dump: rows/s of glag.extract.dump.dump_bank over all splits and the bank's size.
Writes bench/results/extract.json and extract.md.

    python bench/bench_extract.py --data-root ./datasets      # after extracting cifar10-jpeg.tar.gz there
"""
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from glag.data.datasets import load_dataset
from glag.data.longtail import make_long_tail
from glag.data.provenance import code_version
from glag.extract.backbones import Classifier, build_backbone
from glag.extract.dump import dump_bank
from glag.extract.loaders import Images, epoch_order, seeded, split_batches
from glag.extract.losses import build_loss
from glag.extract.pipeline import resolve_config
from glag.extract.distributed import Context
from glag.extract.hostmem import keep_freed_memory
from glag.extract.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def timed(step_fn, batches, steps: int) -> float:
    """images/s of `steps` calls of step_fn on the next batches of the iterator `batches`."""
    done, started = 0, time.perf_counter()
    for _, batch in zip(range(steps), batches):
        step_fn(batch)
        done += len(batch[1])
    return done / (time.perf_counter() - started)


def endless(make_iter):
    while True:
        yield from make_iter()


# GLAG's loops: name -> (--amp, --compile); all against the one fp32 NCHW reference
VARIANTS = {"glag": ("fp32", False), "glag_bf16": ("bf16", False),
            "glag_compile": ("fp32", True), "glag_bf16_compile": ("bf16", True)}
LABELS = {"glag": "GLAG: uint8 in memory, batched tensor crop/flip, channels_last (fp32)",
          "glag_bf16": "GLAG with --amp bf16", "glag_compile": "GLAG with --compile (fp32)",
          "glag_bf16_compile": "GLAG with --amp bf16 --compile"}


def glag_loop(data, cfg, amp: str, compile: bool = False):
    """(step_fn, batch iterator) of GLAG's training path on the LT train split (amp: fp32 or bf16)."""
    cfg = dict(cfg, compile=compile)
    torch.manual_seed(0)
    model = Classifier(build_backbone("resnet32", 3, 32), data.num_classes).to(memory_format=torch.channels_last)
    images = Images(data.train, 3, 32)
    ctx = Context(torch.device("cpu"), amp=amp)
    trainer = Trainer(model, build_loss("ce", data.train_counts, cfg), images, cfg, ctx, 32)
    aug = seeded(0, 0, 1)
    order = epoch_order(images.labels, "instance", seeded(0, 0, 0))
    batches = split_batches(order, cfg["batch_size"], drop_last=True)
    model.train()
    return (lambda b: trainer.train_batch(b[0], b[1], aug)), endless(lambda: images.batches(batches))


def reference_loop(data, cfg, workers: int):
    """(step_fn, batch iterator) of a peer-style loop: NCHW, per-image PIL transforms, DataLoader."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(cfg["mean"], cfg["std"])])

    class PeerCifar(torch.utils.data.Dataset):          # torchvision.datasets.CIFAR10's __getitem__
        def __len__(self):
            return len(data.train)

        def __getitem__(self, i):
            return tf(Image.fromarray(data.train.images[i])), int(data.train.labels[i])

    torch.manual_seed(0)
    model = Classifier(build_backbone("resnet32", 3, 32), data.num_classes)          # NCHW
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(PeerCifar(), batch_size=cfg["batch_size"], shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                                         multiprocessing_context="fork" if workers else None)  # as on Linux

    def step(batch):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    return step, endless(lambda: iter(loader))


def prepare(data_root, im: float, batch_size: int, threads: int):
    """(long-tailed data, resolved config): the same in the parent and in every loop's process."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as glag-extract does (it matters for the dump, not for training)
    raw = load_dataset("cifar10-jpeg", data_root)
    data = make_long_tail(raw, "exp", im, 20, seed=0)
    options = dict(dataset="cifar10-jpeg", loss="ce", out=None, batch_size=batch_size, epochs=200, lr=0.1,
                   warmup_epochs=5, momentum=None, weight_decay=None, sampler=None, crop_pad=None, flip=None,
                   cutout=None, seed=0, compile=False, dump_batch_size=256, groups=None, threads=threads,
                   workers=0, preload_mb=0, backbone="resnet32", im=im, profile=None, val_per_class=None)
    return data, resolve_config(options, raw)


def loop_process(name: str, conn, setup: dict, warmup: int, workers: int):
    """One loop in its own process: GLAG's set up as glag-extract sets up its process, the
    reference as a peer script runs (default allocator). Answers "run n steps" with images/s."""
    if name != "reference":
        keep_freed_memory()
    data, cfg = prepare(**setup)
    step, batches = (reference_loop(data, cfg, workers) if name == "reference"
                     else glag_loop(data, cfg, *VARIANTS[name]))
    started = time.perf_counter()
    timed(step, batches, warmup)                      # compiles the --compile loops
    conn.send(time.perf_counter() - started)
    while (steps := conn.recv()) is not None:
        conn.send(timed(step, batches, steps))


def compare(setup: dict, steps: int, warmup: int, rounds: int, workers: int) -> dict:
    """Each loop in its own process (allocator state and settings are per process, as in real runs);
    rounds alternate between them so that load from other processes hits all alike.

    Returns the median and the best round per loop: on a shared machine the best
    round is the one least disturbed by other processes.
    """
    mp = multiprocessing.get_context("spawn")
    procs, conns = {}, {}
    for name in [*VARIANTS, "reference"]:
        conns[name], child = mp.Pipe()
        procs[name] = mp.Process(target=loop_process, args=(name, child, setup, warmup, workers))
        procs[name].start()                            # not a daemon: the reference's DataLoader forks
        click.echo(f"warm-up {name}: {conns[name].recv():.1f} s", err=True)   # one warms up at a time
    rates = {name: [] for name in procs}
    try:
        for r in range(rounds):
            for name, conn in conns.items():
                conn.send(steps)
                rates[name].append(round(conn.recv(), 1))
                click.echo(f"round {r}: {name} {rates[name][-1]} img/s", err=True)
    finally:
        for name, conn in conns.items():
            conn.send(None)
            procs[name].join()
    out = {"rounds": rates}
    for stat, fn in (("median", np.median), ("best", np.max)):
        v = {name: float(fn(r)) for name, r in rates.items()}
        out[stat] = dict(v, ratios={name: round(v[name] / v["reference"], 2) for name in VARIANTS})
    return out


def dump_rate(data, cfg) -> dict:
    model = Classifier(build_backbone("resnet32", 3, 32), data.num_classes).to(memory_format=torch.channels_last)
    splits = {s: Images(getattr(data, s), 3, 32) for s in ("train", "val", "test")}
    rows = sum(len(s) for s in splits.values())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bank.h5"
        started = time.perf_counter()
        dump_bank(model, data, splits, cfg, Context(torch.device("cpu")), out, log=lambda *a, **k: None)
        seconds = time.perf_counter() - started
        size = out.stat().st_size
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1),
            "bank_mb": round(size / 2 ** 20, 2), "bytes_per_row": round(size / rows, 1)}


@click.command()
@click.option("--data-root", type=click.Path(file_okay=False), default=None, show_default="$GLAG_DATA or ./datasets")
@click.option("--im", default=100.0, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--steps", default=6, show_default=True, help="Timed steps per loop and round.")
@click.option("--rounds", default=3, show_default=True, help="Alternating rounds; the median is reported.")
@click.option("--warmup", default=2, show_default=True, help="Untimed steps of each loop first.")
@click.option("--workers", default=2, show_default=True, help="DataLoader workers of the reference loop.")
@click.option("--threads", default=0, show_default=True, help="torch threads; 0 = default.")
@click.option("--out", type=click.Path(file_okay=False), default=str(RESULTS), show_default="bench/results")
def main(data_root, im, batch_size, steps, rounds, warmup, workers, threads, out):
    """Measure stage-one training and dump throughput on CIFAR-10-LT (CPU)."""
    keep_freed_memory()                                # this process runs the dump, as glag-extract
    setup = dict(data_root=data_root, im=im, batch_size=batch_size, threads=threads)
    data, cfg = prepare(**setup)
    load = [os.getloadavg()[0]]
    train = compare(setup, steps, warmup, rounds, workers)
    dump = dump_rate(data, cfg)
    load.append(os.getloadavg()[0])
    result = {
        "train_images_per_s": train,
        "dump": dump, "setup": {"dataset": "cifar10-jpeg", "im": im, "train_rows": len(data.train),
                                "batch_size": batch_size, "steps": steps, "rounds": rounds, "warmup": warmup,
                                "reference_workers": workers, "threads": torch.get_num_threads()},
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "load_avg_1min": load, "code_version": code_version()},
    }
    write(Path(out), result)


def write(out: Path, r: dict):
    out.mkdir(parents=True, exist_ok=True)
    (out / "extract.json").write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
    t, d, s, m = r["train_images_per_s"], r["dump"], r["setup"], r["machine"]
    md, bt = t["median"], t["best"]
    md = (f"# Stage-one throughput (CPU, {m['cpus']} cores, torch {m['torch']}, {s['threads']} threads)\n\n"
          f"ResNet-32 on CIFAR-10-LT IM {s['im']:g} from the JPEG copy ({s['train_rows']} train images), "
          f"batch {s['batch_size']}, {s['rounds']} alternating rounds of {s['steps']} steps "
          f"(after {s['warmup']} untimed).\n"
          f"1-min load average before/after: {m['load_avg_1min'][0]:.2f} / {m['load_avg_1min'][1]:.2f}.\n\n"
          "| loop | median images/s | best round | / reference (median) | / reference (best) |\n"
          "|---|---|---|---|---|\n"
          + "".join(f"| {LABELS[n]} | {md[n]} | {bt[n]} | {md['ratios'][n]}x | {bt['ratios'][n]}x |\n"
                    for n in VARIANTS)
          + f"| reference: NCHW, per-image PIL transforms, DataLoader x{s['reference_workers']} (fp32) | "
          f"{md['reference']} | {bt['reference']} | 1x | 1x |\n\n"
          "Ratios are per round type over the reference's figure of the same statistic, from one run.\n\n"
          f"Feature dump: {d['rows']} rows in {d['seconds']} s = {d['rows_per_s']} rows/s; "
          f"bank {d['bank_mb']} MB ({d['bytes_per_row']} bytes/row).\n")
    (out / "extract.md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
