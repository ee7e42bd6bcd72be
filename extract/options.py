"""The click options of `glag-extract`, built from the registries.

Options whose default shows as "(recipe)" take the dataset recipe's value
(extract/recipes.py) when not given; each loss's own options come from
glag.extract.names.LOSS_OPTIONS (the loss classes' signatures) and carry its name as prefix.
"""
import click

from glag.data.datasets import ALIASES, DATASETS, canonical_name
from glag.data.longtail import PROFILES
from glag.cli.options import Ratio
from glag.cli.tensorboard import option as tensorboard_option
from glag.data.splits import RULES
# the names only, never torch: --help, --version and option errors answer at once (tests/test_startup.py)
from glag.extract.names import (AMP, AUTOAUGMENT, BACKBONES, COMPILE_MODES, DECODE, DEVICES, LOSS_NAMES,
                                LOSS_OPTIONS, SAMPLERS, BackboneName)

RECIPE = "recipe"


def _opt(*names, **kw):
    kw.setdefault("show_default", RECIPE if kw.get("default") is None else True)
    return click.option(*names, **kw)


def _decode_needs_cuda(ctx, param, value):
    """--decode gpu where no CUDA device is visible: refused before anything runs (with a CUDA device but
    --device cpu, glag.extract.gpu_decode.decode_mode refuses it). Only visibility is checked here: probing
    the decoder would start CUDA on GPU 0 in every torchrun process."""
    if value != "gpu":
        return value
    import torch
    if not torch.cuda.is_available():
        raise click.BadParameter("gpu needs a CUDA device and none is visible; use auto or cpu", ctx, param)
    return value


def loss_option_list() -> list:
    """--<loss>-<option> for every registered loss, e.g. --graloss-c; None = recipe or loss default."""
    out = []
    for name in LOSS_NAMES:
        for key, (default, text) in LOSS_OPTIONS[name].items():
            flag = f"--{name}-{key}".replace("_", "-")
            kind = type(default) if isinstance(default, (int, float, str)) else str
            out.append(_opt(flag, f"{name}_{key}", type=kind, default=None, show_default=str(default),
                            help=f"[{name}] " + (text or f"{key} of the {name} loss.")))
    return out


OPTIONS = [
    _opt("--dataset", type=click.Choice(sorted(DATASETS) + sorted(ALIASES)), default="digits",
         callback=lambda ctx, param, value: canonical_name(value),
         help="Dataset to train on (short names: " + ", ".join(f"{k}={v}" for k, v in sorted(ALIASES.items())) + ")."),
    _opt("--data-root", type=click.Path(file_okay=False), default=None, show_default="$GLAG_DATA or ./datasets",
         help="Folder that holds the raw datasets."),
    _opt("--image-size", type=int, default=None, show_default="the reader's",
         help="Side images are resized to, for readers that decode files (folder, imagenet-lt, inat2018)."),
    _opt("--channels", type=click.Choice(["1", "3"]), default=None, show_default="the reader's",
         help="Gray (1) or RGB (3), for the folder reader."),
    _opt("--im", type=Ratio(), default=None,
         help="Imbalance ratio n_max / n_min of the long-tailed split; a folder dataset keeps every image unless "
              "given."),
    _opt("--profile", type=click.Choice(PROFILES), default=None,
         help="Long-tail profile; listed = every train image as it is (ImageNet-LT, iNat, a folder by default)."),
    _opt("--val-per-class", type=int, default=None,
         help="Val images per class taken out of train (the long tail's leftovers; when every image is kept, at "
              "most a fifth of a class) where the dataset has no val split."),
    _opt("--data-seed", type=int, default=0, help="Seed of the long-tailed subsampling and val split."),
    _opt("--backbone", type=BackboneName(), default=None,
         help=f"Feature extractor: {', '.join(BACKBONES)} or torchvision:<model> (no weights downloaded)."),
    _opt("--pretrained", type=click.Path(), default=None, show_default="none",
         help="Local backbone checkpoint (state dict) to start from."),
    _opt("--loss", type=click.Choice(LOSS_NAMES), default=None, show_default="graloss",
         help="Stage-one loss."),
    *loss_option_list(),
    _opt("--epochs", type=int, default=None, help="Training epochs."),
    _opt("--batch-size", type=int, default=None, help="Global batch size (split over DDP processes)."),
    _opt("--lr", type=float, default=None, help="Peak learning rate of the cosine schedule."),
    _opt("--warmup-epochs", type=float, default=None, help="Linear warm-up length in epochs."),
    _opt("--momentum", type=float, default=None, help="SGD momentum."),
    _opt("--weight-decay", type=float, default=None, help="SGD weight decay."),
    _opt("--sampler", type=click.Choice(SAMPLERS), default=None, help="Instance- or class-balanced sampling."),
    _opt("--crop-pad", type=int, default=None, help="Zero padding before the random crop (pad recipes)."),
    _opt("--flip/--no-flip", default=None, help="Random horizontal flips."),
    _opt("--cutout", type=int, default=None, help="Cutout square side in pixels; 0 = off."),
    _opt("--autoaugment", type=click.Choice(AUTOAUGMENT), default=None,
         help="AutoAugment policy applied per image after crop/flip; none = off."),
    _opt("--mixup", type=click.FloatRange(min=0), default=None,
         help="Mixup alpha: each batch mixed with a permutation of itself, lambda ~ Beta(alpha, alpha); "
              "0 = off (MiSLAS's stage one: 1.0 on CIFAR-LT, 0.2 on ImageNet-LT and iNaturalist)."),
    _opt("--seed", type=int, default=0, help="Seed of initialisation, batch order and augmentation."),
    _opt("--device", type=click.Choice(DEVICES), default="auto", help="auto = CUDA when present."),
    _opt("--amp", type=click.Choice(AMP), default="auto",
         help="bf16 autocast; auto = on CUDA only. bf16 on a CPU with AMX/AVX512-BF16 trains about 2x faster."),
    _opt("--compile/--no-compile", default=False, help="torch.compile the model."),
    _opt("--compile-mode", type=click.Choice(COMPILE_MODES), default="default",
         help="torch.compile mode with --compile; reduce-overhead captures CUDA graphs (GPU only)."),
    _opt("--out", type=click.Path(dir_okay=False), default=None,
         show_default="runs/<dataset>-im<IM>/<loss>/seed<s>/bank.h5; a folder: runs/folder-<name>-<hash>-listed/...",
         help="Bank to write; the checkpoint goes beside it (<name>.ckpt.pt)."),
    _opt("--current/--no-current", default=None, show_default="when the bank is under runs/",
         help="Make the bank written the current one (runs/current.json), which the next tools use by default."),
    _opt("--dump-only", is_flag=True, default=False, help="Only dump features from the finished checkpoint."),
    _opt("--resume/--no-resume", default=True, help="Continue from the checkpoint beside --out."),
    _opt("--groups", type=click.Choice(RULES), default=None, help="Many/medium/few rule of the metrics."),
    _opt("--threads", type=int, default=None, help="CPU threads for torch; 0 = torch's default."),
    tensorboard_option(),
    _opt("--workers", type=click.IntRange(min=0), default=None, show_default="the CPUs this process may use, at most 4",
         help="Processes decoding image files (0 = in this process)."),
    _opt("--preload-mb", type=float, default=4096.0, help="Decode file datasets into memory up to this size."),
    _opt("--decode", type=click.Choice(DECODE), default="auto", callback=_decode_needs_cuda,
         help="Where image files (imagenet-lt, inat2018, folder) are decoded: gpu = the workers read the bytes, "
              "nvJPEG decodes and resizes each batch on the GPU (docs/stage-one.md); cpu = Pillow in the "
              "workers; auto = gpu on a CUDA device."),
    _opt("--dump-batch-size", type=int, default=256, help="Batch size of the feature dump."),
    _opt("--views", type=click.IntRange(min=0), default=0,
         help="Augmented views of the train split to add to the bank (the training augmentation, seeded; "
              "with --dump-only, adds them to a finished run)."),
    _opt("--views-dtype", type=click.Choice(["float16", "float32"]), default="float16",
         help="Storage type of the views' features and logits."),
    _opt("--views-logits/--no-views-logits", default=True,
         help="Store the views' logits; without them stage two computes W f + b from the stored head."),
    _opt("--stop-after-epochs", type=int, default=None, hidden=True, help="Stop after N epochs (tests)."),
]


def check_combinations(cfg: dict) -> None:
    """Refuse options that would do nothing with the others given (rather than be recorded as if they did)."""
    from glag.data.errors import GlagError
    mode = cfg.get("compile_mode") or "default"
    if mode != "default" and not cfg.get("compile"):
        raise GlagError(f"--compile-mode {mode} applies only with --compile; add --compile, or drop --compile-mode")


def apply_options(fn):
    for option in reversed(OPTIONS):
        fn = option(fn)
    return fn
