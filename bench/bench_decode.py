"""ImageNet-size input: ResNet-50 224 px training from JPEG files, GPU decode path vs the CPU loader.

Generates a folder of ImageNet-sized JPEGs on this machine (smooth random
pictures with noise, ~500 x 375, nothing downloaded), then, in one process on
one device, for each decode path of glag.extract.loaders.Images:

  gpu   the DataLoader workers read the files' bytes; each batch is decoded by
        nvJPEG and resized on the GPU (glag.extract.gpu_decode, --decode gpu)
  cpu   the DataLoader workers decode and resize with Pillow (--decode cpu, today's path)

measures decode-only images/s (the loader alone) and training images/s (the
real glag.extract.trainer step: the 'resize' recipe's random 224 crop of the
256 px image, flip, normalise, bf16 autocast on CUDA, SGD), sampling GPU
utilisation in a background thread during the training phase. Writes
decode.json and decode.md under --out (default $GLAG_BENCH_OUT or runs/bench).

    python bench/bench_decode.py --out $OUT/bench          # on a GPU machine (a few minutes)
    python bench/bench_decode.py --dry-run                 # CPU: a handful of tiny images, the same code
"""
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import click
import numpy as np
import torch

from glag.data.datasets.base import ImageSet
from glag.extract.backbones import Classifier, build_backbone
from glag.extract.distributed import Context
from glag.extract.gpu_decode import decode_mode
from glag.extract.loaders import Images, seeded
from glag.extract.losses import build_loss
from glag.extract.pipeline import RESIZE_MARGIN
from glag.extract.recipes import recipe_for
from glag.extract.trainer import Trainer

SHAPES = ((500, 375), (500, 375), (500, 375), (375, 500), (500, 333))   # (W, H): ImageNet's common ones
DRY = dict(images=12, width=64, height=48, classes=2, image_size=16, backbone="resnet_small", batch_size=4,
           steps=2, warmup=1, workers=0, threads=1)


def make_picture(args) -> None:
    """One JPEG of a smooth random picture plus noise: ~90 kB at 500 x 375, near ImageNet's ~110 kB average."""
    path, width, height, seed = args
    from PIL import Image
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = np.clip(smooth + rng.normal(0, 18, smooth.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=90)


def make_jpegs(folder: Path, n: int, width: int, height: int, classes: int) -> ImageSet:
    """n JPEGs under `folder` (shapes varied around width x height, as ImageNet's), labels round-robin."""
    folder.mkdir(parents=True, exist_ok=True)
    scale = (width / 500, height / 375)
    jobs = []
    for i in range(n):
        w, h = SHAPES[i % len(SHAPES)]
        jobs.append((folder / f"{i:06d}.jpg", max(8, round(w * scale[0])), max(8, round(h * scale[1])), i))
    procs = min(len(jobs) // 32, os.cpu_count() or 1)        # a pool pays off from a few dozen images
    if procs > 1:
        with get_context("fork").Pool(procs) as pool:
            pool.map(make_picture, jobs, chunksize=16)
    else:
        for job in jobs:
            make_picture(job)
    return ImageSet(labels=np.arange(n) % classes, paths=[job[0] for job in jobs])


class UtilSampler:
    """Mean GPU utilisation (%) between start() and stop(): torch.cuda.utilization (pynvml) or nvidia-smi, 4 Hz."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.source = device, [], None
        self._stop = threading.Event()

    def _read(self):
        try:
            value, self.source = float(torch.cuda.utilization(self.device)), "torch.cuda.utilization"
            return value
        except Exception:     # no pynvml: ask nvidia-smi
            query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                     "-i", str(self.device.index or 0)]
            out = subprocess.run(query, capture_output=True, text=True, timeout=5)
            self.source = "nvidia-smi"
            return float(out.stdout.strip().splitlines()[0])

    def _loop(self):
        while not self._stop.wait(0.25):
            try:
                self.samples.append(self._read())
            except Exception:
                return                    # no way to read it on this machine: report None

    def start(self):
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self):
        self._stop.set()
        if self.device.type == "cuda":
            self._thread.join()

    @property
    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batches(n_rows: int, batch_size: int, count: int) -> list:
    """`count` batches of random rows: one long pass, so the DataLoader's workers start once."""
    g = seeded(0, 0, 0)
    return [torch.randint(n_rows, (batch_size,), generator=g) for _ in range(count)]


def decode_rate(images: Images, batches: list, warmup: int, device) -> float:
    """images/s of the loader alone (batches decoded and resized, on the device for the gpu path)."""
    done, started = 0, None
    for i, (x, labels, _) in enumerate(images.batches(batches)):
        x.to(device, non_blocking=True)
        if i + 1 == warmup:
            sync(device)
            started = time.perf_counter()
        elif i >= warmup:
            done += len(labels)
    sync(device)
    return done / (time.perf_counter() - started)


def train_rate(images: Images, batches: list, warmup: int, cfg: dict, ctx, image_size: int):
    """(training images/s, mean GPU utilisation %, its source) of the real trainer step."""
    torch.manual_seed(0)
    model = Classifier(build_backbone(cfg["backbone"], 3, image_size), cfg["num_classes"])
    model = model.to(ctx.device, memory_format=torch.channels_last)
    loss = build_loss("ce", np.bincount(images.labels.numpy(), minlength=cfg["num_classes"]), cfg).to(ctx.device)
    trainer = Trainer(model, loss, images, cfg, ctx, image_size)
    aug = seeded(0, 0, 1, device=ctx.device)
    model.train()
    done, sampler, started = 0, UtilSampler(ctx.device), None
    for i, (x, labels, _) in enumerate(images.batches(batches)):
        trainer.train_batch(x, labels, aug)
        if i + 1 == warmup:
            sync(ctx.device)
            started = time.perf_counter()
            sampler.start()
        elif i >= warmup:
            done += len(labels)
    sync(ctx.device)
    seconds = time.perf_counter() - started
    sampler.stop()
    return done / seconds, sampler.mean, sampler.source


def bench_cfg(p: dict) -> dict:
    """The imagenet-lt recipe at the benchmark's size, as glag-extract resolves it (lr etc. do not matter)."""
    cfg = recipe_for("imagenet-lt", p["image_size"], 3)
    cfg.update(backbone=p["backbone"], batch_size=p["batch_size"], epochs=1, warmup_epochs=0, seed=0, mixup=0.0,
               compile=p["compile"], loss="ce", num_classes=p["classes"], image_size=p["image_size"])
    return cfg


def machine(device) -> dict:
    info = {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}
    import torchvision
    info["torchvision"] = torchvision.__version__
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_results(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps(result, indent=2) + "\n")
    p, rows = result["params"], []
    for path, r in result["rates"].items():
        util = "n/a" if r["gpu_util_mean"] is None else f"{r['gpu_util_mean']:.0f} %"
        rows.append(f"| {path} | {r['decoded_on']} | {r['decode_images_per_s']:,.0f} | "
                    f"{r['train_images_per_s']:,.0f} | {util} |")
    md = [f"`{p['backbone']}` training at {p['image_size']} px from {p['images']} generated JPEGs "
          f"(~{p['width']}x{p['height']}), batch {p['batch_size']}, {p['workers']} DataLoader workers, "
          f"on {result['machine'].get('gpu', 'CPU')} with {result['machine']['cpu_cores']} CPU cores"
          + (" (dry run: tiny images, not a measurement)" if result["dry_run"] else "") + ".", "",
          "| decode path | decoded on | loader alone, images/s | training, images/s | GPU utilisation (training) |",
          "|---|---|---:|---:|---:|", *rows, "",
          f"GPU path / CPU loader, training: {result['train_ratio_gpu_over_cpu']}x."]
    (out / "decode.md").write_text("\n".join(md) + "\n")


def run(p: dict, device: torch.device, jpeg_dir: Path) -> dict:
    split = make_jpegs(jpeg_dir, p["images"], p["width"], p["height"], p["classes"])
    cfg, ctx = bench_cfg(p), Context(device, amp="auto")
    decode_size = round(p["image_size"] * RESIZE_MARGIN)
    modes = {"gpu": "gpu" if device.type == "cpu" else decode_mode("gpu", device), "cpu": "cpu"}
    rates = {}
    for path, mode in modes.items():
        images = Images(split, 3, decode_size, p["workers"], decode=mode, device=device)
        count = p["warmup"] + p["steps"]
        decode = decode_rate(images, random_batches(len(split), p["batch_size"], count), p["warmup"], device)
        images.decoded = {}
        train, util, source = train_rate(images, random_batches(len(split), p["batch_size"], count), p["warmup"],
                                         cfg, ctx, p["image_size"])
        rates[path] = {"decoded_on": str(device) if mode == "gpu" else "cpu (workers)",
                       "decode_images_per_s": round(decode, 1), "train_images_per_s": round(train, 1),
                       "gpu_util_mean": util, "gpu_util_source": source, "decoded": images.decoded}
        click.echo(f"{path}: loader {decode:,.0f} img/s, training {train:,.0f} img/s, GPU util {util}", err=True)
    ratio = rates["gpu"]["train_images_per_s"] / rates["cpu"]["train_images_per_s"]
    return {"params": p, "machine": machine(device), "rates": rates, "train_ratio_gpu_over_cpu": round(ratio, 2)}


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              show_default="$GLAG_BENCH_OUT or runs/bench", help="Folder for decode.json and decode.md.")
@click.option("--images", default=2000, show_default=True, help="JPEGs to generate.")
@click.option("--width", default=500, show_default=True)
@click.option("--height", default=375, show_default=True)
@click.option("--classes", default=100, show_default=True)
@click.option("--image-size", default=224, show_default=True, help="Training crop (decoded at 8/7 of it).")
@click.option("--backbone", default="resnet50", show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--steps", default=40, show_default=True, type=click.IntRange(min=1),
              help="Timed batches per path and phase.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=1),
              help="Untimed batches first (cuDNN autotune, workers starting).")
@click.option("--workers", default=None, type=int, show_default="CPU cores - 1", help="DataLoader workers.")
@click.option("--compile/--no-compile", default=False, help="torch.compile the model (both paths).")
@click.option("--threads", default=0, show_default=True, help="torch CPU threads of this process; 0 = torch's default.")
@click.option("--jpeg-dir", type=click.Path(file_okay=False), default=None, show_default="a temporary folder",
              help="Where the JPEGs are generated (kept if given).")
@click.option("--dry-run", is_flag=True, help="CPU, a few tiny images and a tiny backbone: checks the code runs.")
def main(out, jpeg_dir, dry_run, **params):
    """Measure ResNet-50 training images/s from JPEG files with the GPU decode path and the CPU loader."""
    params["workers"] = max(1, (os.cpu_count() or 2) - 1) if params["workers"] is None else params["workers"]
    if dry_run:
        params.update(DRY)
    params["classes"] = min(params["classes"], params["images"])     # every class needs an image (the loss)
    device = torch.device("cuda" if torch.cuda.is_available() and not dry_run else "cpu")
    if params["threads"]:
        torch.set_num_threads(params["threads"])
    torch.set_flush_denormal(True)                      # as glag-extract does
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True           # fixed shapes: let cuDNN pick its kernels
    out = Path(out or os.environ.get("GLAG_BENCH_OUT") or "runs/bench")
    tmp = None if jpeg_dir else tempfile.mkdtemp(prefix="glag-jpegs-")
    try:
        result = run(params, device, Path(jpeg_dir or tmp))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result["dry_run"] = dry_run
    write_results(out, result)
    click.echo(f"wrote {out / 'decode.json'} and {out / 'decode.md'}", err=True)


if __name__ == "__main__":
    main()
