"""Batched image augmentation on whole uint8 batches, as tensors (no per-image PIL).

Images stay (B, H, W, C) uint8 until the batch is on its device; one gather does
the random crop (with zero padding) and the horizontal flip for the whole batch,
and the result, permuted to (B, C, H, W), is already channels_last in memory,
which is the fast layout for convolutions on CPU and GPU (DESIGN.md §5).
AutoAugment (`--autoaugment`, off in every recipe as in the paper's CIFAR
recipe) runs torchvision's tensor ops image by image on the uint8 crops: each
image draws its own sub-policy, as the balanced-softmax recipe does with PIL,
at ~14 ms per batch of 128 32-px images on one CPU core (~10 % of a compiled
bf16 ResNet-32 step). `mixup` (`--mixup ALPHA`, off in every recipe) mixes the
finished float batch with a permutation of itself; the trainer mixes the loss
to match (`mixup_loss`). The feature bank's augmented views never use it.
"""
import torch
from torchvision.transforms import v2

from glag.data.errors import GlagError
from glag.extract.names import AUTOAUGMENT  # torchvision's AutoAugmentPolicy names, defined without torch


def random_crop_flip(images, size: int, pad: int, flip: bool, generator: torch.Generator):
    """Random `size` x `size` crops of the zero-padded images, mirrored with probability 1/2.

    Args:
        images: (B, H, W, C) uint8, H, W >= size - 2 * pad.
        size: output side.
        pad: zero padding added on every side before cropping.
        flip: mirror left-right at random when True.
        generator: torch.Generator that draws the offsets (on the CPU or the images' device).
    Returns:
        (B, size, size, C) uint8 on the images' device.
    """
    B, H, W, _ = images.shape
    if pad:
        images = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad))   # zero pad H and W
    Hp, Wp = images.shape[1:3]
    g = generator.device                 # draws happen where the generator lives (CUDA: no host sync)
    oy = torch.randint(0, Hp - size + 1, (B,), generator=generator, device=g)
    ox = torch.randint(0, Wp - size + 1, (B,), generator=generator, device=g)
    if flip:
        mirror = torch.rand(B, generator=generator, device=g) < 0.5
    else:
        mirror = torch.zeros(B, dtype=torch.bool, device=g)
    steps = torch.arange(size, device=g)
    rows = oy[:, None] + steps                                                    # (B, size)
    cols = ox[:, None] + torch.where(mirror[:, None], size - 1 - steps, steps)    # (B, size)
    dev = images.device
    b = torch.arange(B, device=dev)[:, None, None]
    return images[b, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]          # (B, size, size, C)


def auto_augment(images, policy: str, generator: torch.Generator):
    """Each image through one random sub-policy of AutoAugment (Cubuk et al. 2019).

    Args:
        images: (B, H, W, C) uint8, C = 1 or 3.
        policy: one of AUTOAUGMENT other than "none".
        generator: seeds torchvision's draws, which use torch's global generator; that one is
            forked around the call, so the run's other random streams are untouched.
    Returns:
        (B, H, W, C) uint8.
    """
    transform = v2.AutoAugment(v2.AutoAugmentPolicy(policy))
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([transform(image) for image in images.permute(0, 3, 1, 2)])
    return out.permute(0, 2, 3, 1)


def center_crop(images, size: int):
    """The central `size` x `size` window. (B, H, W, C) -> (B, size, size, C)."""
    H, W = images.shape[1:3]
    top, left = (H - size) // 2, (W - size) // 2
    return images[:, top:top + size, left:left + size]


def cutout(x, length: int, generator: torch.Generator):
    """Zero one `length` x `length` square per image (DeVries & Taylor), clipped at the border.

    Args:
        x: (B, C, H, W) float, already normalised (so 0 is the mean colour).
    Returns:
        x with the squares zeroed (a new tensor).
    """
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B,), generator=generator, device=generator.device).to(x.device)
    cx = torch.randint(0, W, (B,), generator=generator, device=generator.device).to(x.device)
    ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    inside_y = (ys[None] - cy[:, None]).abs() <= length // 2                      # (B, H)
    inside_x = (xs[None] - cx[:, None]).abs() <= length // 2                      # (B, W)
    hole = inside_y[:, :, None] & inside_x[:, None, :]                            # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def normalise(images, mean, std):
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in channels_last memory, (x / 255 - mean) / std."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous(memory_format=torch.channels_last)


class BatchTransform:
    """Train or eval transform of a uint8 batch, configured from the resolved cfg.

    cfg keys: crop ("pad": crop the image size out of a padded copy; "resize":
    images were decoded larger, crop `image_size` out of them), crop_pad, flip,
    cutout (square side, 0 = off), autoaugment (a policy or "none"; absent = "none"), mean, std.
    """

    def __init__(self, cfg: dict, image_size: int, train: bool):
        self.size, self.train = image_size, train
        self.pad = int(cfg["crop_pad"]) if cfg["crop"] == "pad" else 0
        self.flip, self.cutout = bool(cfg["flip"]), int(cfg["cutout"])
        self.policy = cfg.get("autoaugment") or "none"
        if self.policy not in AUTOAUGMENT:
            raise GlagError(f"--autoaugment {self.policy!r}: choose from {list(AUTOAUGMENT)}")
        self.mean, self.std = cfg["mean"], cfg["std"]

    def __call__(self, images, generator: torch.Generator | None = None):
        """(B, H, W, C) uint8 on the target device -> (B, C, size, size) float32 channels_last."""
        if self.train:
            images = random_crop_flip(images, self.size, self.pad, self.flip, generator)
            if self.policy != "none":
                images = auto_augment(images, self.policy, generator)
        elif images.shape[1] != self.size or images.shape[2] != self.size:
            images = center_crop(images, self.size)
        x = normalise(images, self.mean, self.std)
        if self.train and self.cutout:
            x = cutout(x, self.cutout, generator)
        return x


def mixup(x, alpha: float, generator: torch.Generator):
    """Mixup (Zhang et al., ICLR 2018) of a batch with a permutation of itself.

    lambda ~ Beta(alpha, alpha), drawn once per batch as G1 / (G1 + G2) with Gi ~ Gamma(alpha, 1),
    and the partner permutation, both from `generator` on its own device: a resumed run redraws
    them exactly, and on CUDA nothing waits for the host.
    Args:
        x: (B, C, H, W) float batch, on the generator's device.
        alpha: Beta concentration, > 0.
    Returns:
        (lam * x + (1 - lam) * x[perm] (B, C, H, W) channels_last, lam () float32, perm (B,) int64).
    """
    g = generator.device
    gammas = torch._standard_gamma(torch.full((2,), float(alpha), device=g), generator=generator)
    # both draws can underflow to 0 for tiny alpha: clamping keeps lam finite (0.5 in that case)
    gammas = gammas.clamp_min(torch.finfo(gammas.dtype).tiny)
    lam = gammas[0] / gammas.sum()                                                # ()
    perm = torch.randperm(len(x), generator=generator, device=g)                 # (B,)
    mixed = lam * x + (1 - lam) * x[perm]
    return mixed.contiguous(memory_format=torch.channels_last), lam, perm


def mixup_loss(loss_fn, logits, labels, lam, perm):
    """lam * loss(z, y) + (1 - lam) * loss(z, y[perm]): the mixup objective for any stage-one loss.

    Args:
        loss_fn: (logits (B, C), labels (B,)) -> scalar, e.g. a member of glag.extract.losses.LOSSES.
        logits: (B, C) of the mixed batch; labels: (B,) of the unmixed one; lam: () tensor or float.
    """
    return lam * loss_fn(logits, labels) + (1 - lam) * loss_fn(logits, labels[perm])
