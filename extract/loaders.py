"""Batches of (uint8 images, labels, row ids) for training and dumping.

Images that fit in memory are indexed as one uint8 tensor (B, H, W, C) per
batch; datasets listed as files (ImageNet-LT, iNat, folders) are decoded by a
torch DataLoader with worker processes, or decoded once into memory when the
whole split fits under --preload-mb. With decode="gpu" the workers only read the
files' bytes and each batch is decoded and resized on the training device
(glag.extract.gpu_decode; docs/stage-one.md). The order of each epoch is drawn from a
torch.Generator seeded by (seed, epoch) alone, so a resumed run and every
DDP rank see the same global order; each rank takes every world-th row of it
(the DistributedSampler scheme, padded to a multiple of the world size).
"""
import numpy as np
import torch

from glag.data.datasets.base import ImageSet
from glag.data.errors import GlagError
from glag.extract.names import SAMPLERS  # the option choices, defined without torch


def seeded(*words: int, device="cpu") -> torch.Generator:
    """A generator on `device` whose stream depends only on `words` (seed, epoch, purpose, rank...)."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def epoch_order(labels, sampler: str, generator: torch.Generator) -> torch.Tensor:
    """One epoch's row order over a split of N rows. (N,) int64.

    instance: a permutation (every image once). class: N draws, each a uniform
    class and then a uniform image of it (class-balanced sampling).
    """
    labels = torch.as_tensor(labels)
    n = len(labels)
    if sampler == "instance":
        return torch.randperm(n, generator=generator)
    if sampler != "class":
        raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}")
    order = torch.argsort(labels, stable=True)                          # rows grouped by class
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()                           # classes with images
    starts = torch.cumsum(counts, 0) - counts
    k = present[torch.randint(len(present), (n,), generator=generator)]  # (N,) class per draw
    offset = (torch.rand(n, generator=generator) * counts[k]).long()    # uniform image within k
    return order[starts[k] + offset]


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s rows of `order`, padded by wrapping so every rank gets the same number."""
    if world == 1:
        return order
    total = -(-len(order) // world) * world
    padded = torch.cat([order, order[: total - len(order)]]) if total > len(order) else order
    return padded[rank::world]


def split_batches(rows: torch.Tensor, batch_size: int, drop_last: bool) -> list:
    """Consecutive batches of `rows`; a last batch of 1 is dropped in training (BatchNorm needs 2)."""
    batches = list(torch.split(rows, batch_size))
    if drop_last and batches and len(batches[-1]) < 2 and len(batches) > 1:
        batches.pop()
    return batches


class _Failed:
    """An item that could not be decoded, returned instead of raising: a GlagError raised in a DataLoader
    worker reaches the user wrapped in the worker's traceback, so the message travels as data and is
    raised in the main process (`Images.batches`), the same with or without workers."""

    def __init__(self, message: str):
        self.message = message


class _Files(torch.utils.data.Dataset):
    """Decodes one image file per item, resized to `size`: (size, size, C) uint8 tensor, or a _Failed."""

    def __init__(self, paths, channels: int, size: int):
        self.paths, self.channels, self.size = paths, channels, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from glag.data.images import decode_image   # Pillow only where files are read
        try:
            img = decode_image(self.paths[i], self.channels, size=self.size)
        except GlagError as e:
            return _Failed(str(e))
        except OSError as e:
            return _Failed(f"{self.paths[i]}: cannot decode image ({e}); remove or replace it")
        return torch.from_numpy(np.array(img))  # a writable copy (Pillow arrays are read-only)


class _Encoded(torch.utils.data.Dataset):
    """One file's bytes per item, for the batched decoder: (path, bytes, gpu_decodable), or a _Failed."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from glag.extract.gpu_decode import read_encoded
        try:
            return read_encoded(self.paths[i])
        except FileNotFoundError:          # the words of glag.data.images.decode_image, as on the CPU path
            return _Failed(f"{self.paths[i]}: image file not found; the dataset's file list and its image root "
                           "disagree (check the image-root option or re-extract the dataset)")
        except OSError as e:
            return _Failed(f"{self.paths[i]}: cannot read image file ({e}); remove or replace it")


def _stack(items):
    failed = [item for item in items if isinstance(item, _Failed)]
    return failed[0] if failed else torch.stack(items)


def _pack(items):
    from glag.extract.gpu_decode import pack
    failed = [item for item in items if isinstance(item, _Failed)]
    return failed[0] if failed else pack(items)


class Images:
    """One split's images, fetched by batches of row positions.

    Args:
        split: an ImageSet (images in memory, or paths).
        channels: 1 or 3.
        size: side the images are decoded at (paths only).
        workers: DataLoader processes for files (0 = in this process).
        decode: how files are decoded (resolved by glag.extract.gpu_decode.decode_mode): "cpu" =
            Pillow in the workers; "gpu" = the workers read bytes, batches are decoded on `device`.
        device: where "gpu" decodes, and where its batches come out (CUDA; the CPU in tests).
    """

    def __init__(self, split: ImageSet, channels: int, size: int, workers: int = 0, decode: str = "cpu",
                 device="cpu"):
        if decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu' (see gpu_decode.decode_mode), got {decode!r}")
        self.labels = torch.as_tensor(split.labels)
        self.index = torch.as_tensor(split.index)
        self.images = None if split.images is None else torch.from_numpy(np.ascontiguousarray(split.images))
        self.files = None if split.paths is None else _Files(split.paths, channels, size)
        self.workers = workers
        self.decode, self.decode_device = decode, torch.device(device)
        self.decoded = {}                   # files taken by each decoder (decode="gpu"): {"gpu": n, "cpu": m}

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def to(self, device) -> "Images":
        """Keep an in-memory split on `device` (a GPU holds CIFAR-sized uint8 sets easily)."""
        if self.images is None:
            raise ValueError("only an in-memory split can move to a device; preload it first")
        self.images, self.labels, self.index = (t.to(device) for t in (self.images, self.labels, self.index))
        return self

    def __len__(self):
        return len(self.labels)

    def batches(self, batches: list):
        """Yield (images (B, H, W, C) uint8, labels (B,), index (B,)) for each batch of positions.

        Images come on the CPU, or on `decode_device` when files are decoded there (decode="gpu")."""
        if self.images is not None:
            for rows in batches:
                rows = rows.to(self.device)
                yield self.images[rows], self.labels[rows], self.index[rows]
            return
        if self.decode == "gpu":
            yield from self._decoded_batches(batches)
            return
        loader = torch.utils.data.DataLoader(self.files, batch_sampler=[b.tolist() for b in batches],
                                             num_workers=self.workers, collate_fn=_stack,
                                             persistent_workers=False)
        for rows, images in zip(batches, loader):
            if isinstance(images, _Failed):
                raise GlagError(images.message)
            yield images, self.labels[rows], self.index[rows]

    def _decoded_batches(self, batches: list):
        """decode="gpu": workers read the bytes (a DataLoader prefetches batches ahead), this process
        decodes and resizes each batch on the device (glag.extract.gpu_decode.decode_batch)."""
        from glag.extract.gpu_decode import decode_batch, unpack
        loader = torch.utils.data.DataLoader(_Encoded(self.files.paths), batch_sampler=[b.tolist() for b in batches],
                                             num_workers=self.workers, collate_fn=_pack,
                                             persistent_workers=False)
        for rows, packed in zip(batches, loader):
            if isinstance(packed, _Failed):
                raise GlagError(packed.message)
            images = decode_batch(unpack(packed), self.files.channels, self.files.size, self.decode_device,
                                  self.decoded)
            yield images, self.labels[rows], self.index[rows]

    def preload(self, limit_mb: float, progress=None) -> bool:
        """Decode every file into memory when the split fits in `limit_mb`; True if it did."""
        if self.images is not None:
            return True
        size, channels = self.files.size, self.files.channels
        if len(self) * size * size * channels > limit_mb * 2 ** 20:
            return False
        out = torch.empty((len(self), size, size, channels), dtype=torch.uint8)
        pos = torch.arange(len(self))
        for start, (images, _, _) in zip(range(0, len(self), 256), self.batches(list(pos.split(256)))):
            out[start:start + len(images)] = images.cpu()      # decode="gpu" decodes on the device
            if progress:
                progress(start + len(images), len(self))
        self.images, self.files = out, None
        return True
