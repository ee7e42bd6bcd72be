"""GLAG from Python: the three stages with the same options, defaults and checks as the console scripts.

    import glag.api as glag
    bank = glag.extract(dataset="digits", loss="graloss", epochs=30)       # -> Path of bank.h5
    store = glag.generate(bank=bank, beta_init=0.6)                          # -> Path of the store
    run = glag.classify(bank=bank, method="glag")                            # -> Path of the run folder
    glag.load_run(run)["metrics"]["test"]["overall"]
    again = glag.classify(config=run / "config.json", beta_init=0.3)        # a saved config, one change
    glag.load_results("runs/")                     # one row per finished run below: a DataFrame (pandas) or dicts
    classes, probs = glag.predict(run, ["cat.jpg"])  # the run's model.pt on raw images (its own preprocessing)

Keyword arguments are the command-line options with underscores (`beta_init` for
`--beta-init`); every option left out takes the tool's default, as on the command
line, and `config=` reads a saved config first. Bad input raises GlagError with
the tool's one-line message, whatever the entry point and whatever is wrong (a
missing file, a value of the wrong type, an empty list of images).
"""
import json
import os
from pathlib import Path
from typing import NamedTuple

import click

from glag.data.errors import GlagError


def _options(command: click.Command, prog: str, given: dict) -> tuple:
    """(every option of `command` as the CLI would resolve it, the names the caller set).

    Values pass through click's own types and callbacks, so they are checked as on the command line.
    """
    given = dict(given)
    saved = given.pop("config", None)
    defaults = {}
    if saved is not None:
        from glag.cli.config_file import take_saved
        defaults, line = take_saved(_path(saved, "config", prog), command)
        click.echo(line, err=True)
    params = {p.name: p for p in command.params}
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise GlagError(f"{prog}: unknown option(s) {unknown}; see `{prog} --help`")
    for name, value in given.items():
        if value is not None and isinstance(params[name].type, click.Path):
            _path(value, name, prog)
    try:
        ctx = command.make_context(prog, [], default_map=dict(defaults, **given))
    except click.ClickException as e:
        raise GlagError(f"{prog}: {e.format_message()}") from None
    except (TypeError, ValueError) as e:      # a value click's types could not even look at (a list for a number)
        raise GlagError(f"{prog}: an option's value has the wrong type ({e}); give what the option's --help "
                        "says") from None
    return ctx.params, set(given) | set(defaults)


def _path(value, name: str, prog: str):
    """`value` when it is a path (str or os.PathLike); else the one-line GlagError naming the argument."""
    if not isinstance(value, (str, os.PathLike)):
        raise GlagError(f"{prog}: {name}={value!r} is not a path; give a str or a pathlib.Path")
    return value


def extract(**options) -> Path:
    """Stage one (glag-extract): train, dump the bank; returns its path (None when stopped early)."""
    from glag.extract.cli import main
    from glag.extract.pipeline import run_extract
    params, _ = _options(main, "glag-extract", options)
    return run_extract(params)


def generate(**options) -> Path:
    """The AFG (glag-generate): write the synthetic store of a bank; returns its path."""
    from glag.data.bank import Bank
    from glag.cli.util import resolve_bank
    from glag.generate.cli import main
    from glag.generate.run import run
    params, _ = _options(main, "glag-generate", options)
    dry_run, force = params.pop("dry_run"), params.pop("force")
    params["bank"] = str(resolve_bank(params["bank"], params["dataset"]))
    with Bank(params["bank"]) as bank:
        return Path(run(bank, params, dry_run=dry_run, force=force))


def classify(**options) -> Path:
    """Stage two (glag-classify run): one head on a bank; returns the run folder."""
    from glag.classify.cli import run as run_command
    from glag.classify.run import run_stage2
    params, explicit = _options(run_command, "glag-classify run", options)
    return run_stage2(params, explicit)


def load_run(folder) -> dict:
    """A finished stage-two run: {"config", "metrics", "history", "beta" (or None)} from its JSON files."""
    folder = Path(_path(folder, "folder", "load_run"))
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else None
    if read("metrics.json") is None:
        raise GlagError(f"{folder}: not a finished stage-two run (no metrics.json)")
    return {k: read(f"{k}.json") for k in ("config", "metrics", "history", "beta")}


def load_results(*paths):
    """One row per finished stage-two run in or under `paths` (run folders or folders holding them).

    Columns (glag.classify.table.result_row): run, name, method, dataset, bank, bank_loss, bank_seed,
    seed, {val,test}_{overall,many,medium,few} (fractions), then every scalar option of the run's config.
    Returns a pandas DataFrame when pandas is importable, else a list of dicts.
    """
    from glag.classify.table import find_runs, result_row
    rows = [result_row(run) for run in find_runs([_path(p, "paths", "load_results") for p in paths] or (".",))]
    try:
        import pandas
    except ImportError:  # pandas is no dependency: plain rows are as good for a script
        return rows
    return pandas.DataFrame(rows)


class Predictions(NamedTuple):
    classes: "numpy.ndarray"    # (N,) int64 class indices (model.class_names[i] names class i)
    probs: "numpy.ndarray"      # (N, C) float32 softmax of the deployed model's logits


def predict(run_or_deployed, images, batch_size: int = 256, device: str = "cpu") -> Predictions:
    """Classify raw images with a run's deployed model (its model.pt), preprocessed as stage one did.

    Args:
        run_or_deployed: a stage-two run folder (written with deploy on), or its model.pt.
        images: a sequence of images, each a file path, a PIL image or a uint8 (H, W[, C]) array; or one
            uint8 (N, H, W[, C]) array. Each is brought to the model's channels, decoded at its decode size
            (bilinear, as stage one decodes files), centre-cropped to its image size and normalised with
            its mean/std (all from the bank's config, saved in model.pt).
        batch_size, device: how the forward passes run.
    Returns:
        Predictions(classes, probs).
    """
    import numpy as np
    import torch

    from glag.extract.augment import center_crop
    from glag.extract.backbones import load_deployed
    items, device = _items(images), _device(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GlagError(f"predict: batch_size={batch_size!r}; give a whole number >= 1")
    model = load_deployed(_model_file(_path(run_or_deployed, "run_or_deployed", "predict")), map_location=device)
    size, channels = int(model.preprocess["decode_size"]), int(model.mean.shape[1])   # mean: one value per channel
    batch = np.stack([_image(im, channels, size) for im in items])
    classes, probs = [], []
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            x = center_crop(torch.from_numpy(batch[start:start + batch_size]), model.image_size)  # stage one's eval crop
            x = x.permute(0, 3, 1, 2).float().div_(255).to(device)   # the model normalises [0, 1] itself
            p = torch.softmax(model(x).float(), dim=1).cpu()
            classes.append(p.argmax(1).numpy())
            probs.append(p.numpy())
    return Predictions(np.concatenate(classes), np.concatenate(probs))


def _model_file(where) -> Path:
    path = Path(where)
    if path.is_dir():
        if not (path / "model.pt").is_file():
            reason = ((load_run(path)["metrics"].get("deploy") or {}).get("reason")
                      if (path / "metrics.json").is_file() else None)
            raise GlagError(f"{path}: no model.pt ({reason or 'not a run folder written with --deploy'}); "
                            "rerun `glag-classify run --deploy` on a bank with its stage-one checkpoint")
        return path / "model.pt"
    return path


def _items(images) -> list:
    import numpy as np
    if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)
                                           and images.dtype == np.uint8 and (images.ndim == 2 or images.shape[-1] in (1, 3))):
        return [images]                              # one image given alone
    try:
        items = list(images)                         # a sequence, or an (N, H, W[, C]) array
    except TypeError:
        items = None
    if not items:
        raise GlagError(f"predict: no images in {type(images).__name__} {str(images)[:40]}; give an image, a sequence "
                        "of images or a uint8 (N, H, W[, C]) array")
    return items


def _device(device) -> str:
    """`device` checked as --device is (auto, cpu, cuda, cuda:N); auto is resolved."""
    from glag.cli.options import Device
    try:
        device = Device().convert(device, None, None)
    except click.ClickException as e:
        raise GlagError(f"predict: device {e.format_message().removeprefix('Invalid value: ')}") from None
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _image(image, channels: int, size: int):
    """One image as a (size, size, channels) uint8 array, converted and resized as glag.data.images does."""
    import numpy as np
    from PIL import Image

    from glag.data.images import decode_image, to_array
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise GlagError(f"predict: {image}: no such image file; check the path")
        return decode_image(image, channels, size)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise GlagError(f"predict: an image array must be uint8 (H, W), (H, W, 1) or (H, W, 3); "
                            f"got {image.dtype} {image.shape}")
        image = image.reshape(image.shape[0], image.shape[1], -1)
        if image.shape[2] == channels and image.shape[:2] == (size, size):
            return image                               # already as stage one read it: no round trip through PIL
        image = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    if not isinstance(image, Image.Image):
        raise GlagError(f"predict: {type(image).__name__} is not an image (a path, a PIL image or a uint8 array)")
    return to_array(image, channels, size)
