"""Image files to uint8 arrays, with Pillow only (no torchvision in data/).

Path-based datasets (folder, ImageNet-LT, iNat) are decoded one image at a time
by `decode_image` in stage one's loaders; small datasets shipped as JPEG folders
(cifar10-jpeg, tiny-imagenet) are decoded once into memory by `decode_all`.
"""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from glag.data.errors import GlagError

MODES = {1: "L", 3: "RGB"}
PROGRESS_EVERY = 10000          # images between progress lines of decode_all


def decode_image(path, channels: int = 3, size: int | None = None) -> np.ndarray:
    """One image file as an array.

    Grayscale files become RGB (3 equal planes) when channels=3, colour files
    become luminance when channels=1; palette/alpha images are flattened the same way.

    Args:
        path: an image file Pillow can read (JPEG, PNG, BMP, ...).
        channels: 1 (L) or 3 (RGB).
        size: resize to size x size (bilinear, antialiased when shrinking); None keeps the file's size.
    Returns:
        (H, W, channels) uint8.
    """
    if channels not in MODES:
        raise ValueError(f"channels must be one of {sorted(MODES)}, got {channels}")
    try:
        with Image.open(path) as im:
            return to_array(im, channels, size)
    except FileNotFoundError:
        raise GlagError(f"{path}: image file not found; the dataset's file list and its image root disagree "
                        "(check the image-root option or re-extract the dataset)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        # Pillow reports truncated or foreign files as OSError / SyntaxError
        raise GlagError(f"{path}: not a readable image ({type(e).__name__}: {e}); replace or remove the file") from None


def to_array(im: Image.Image, channels: int, size: int | None = None) -> np.ndarray:
    """An opened PIL image as decode_image returns a file: (H, W, channels) uint8, converted and resized."""
    im = im.convert(MODES[channels])
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def decode_all(paths, channels: int, size: int, workers: int = 2, what: str = "decoding") -> np.ndarray:
    """Decode many files into one in-memory array, in order, with progress on stderr.

    Pillow releases the GIL while decoding, so a few threads use several cores
    without the start-up cost of processes.

    Args:
        paths: N image files.
        channels: 1 or 3.
        size: every image is brought to size x size so they stack.
        workers: decoding threads.
        what: label of the progress lines.
    Returns:
        (N, size, size, channels) uint8.
    """
    from glag.cli.util import echo_progress  # click is only needed when there is something to report

    paths = list(paths)
    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    started = time.time()

    def one(i):
        out[i] = decode_image(paths[i], channels, size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), PROGRESS_EVERY):
            list(pool.map(one, range(start, min(start + PROGRESS_EVERY, len(paths)))))
            echo_progress(min(start + PROGRESS_EVERY, len(paths)), len(paths), started, what)
    return out
