"""JPEG files decoded in batches on the training device (nvJPEG on CUDA), resized there.

The CPU path (glag.extract.loaders._Files -> glag.data.images.decode_image) decodes
each file with Pillow in a DataLoader worker and squashes it to size x size
(bilinear, antialiased when shrinking). For ImageNet-size JPEGs that costs ~3 ms of
CPU per image, which bounds a ResNet-50 on a GPU. Here the workers only read the
bytes (`read_encoded`, `pack`); the main process decodes a whole batch with torchvision's
`decode_jpeg(list, device=...)` and resizes it on the same device (`decode_batch`),
with the same geometry: RGB (or Pillow's luma for 1 channel) squashed to
size x size by antialiased bilinear resampling, pixel centres aligned. The images
differ from Pillow's only by rounding: nvJPEG's IDCT and chroma upsampling vs
libjpeg-turbo's, and float resampling rounded once vs Pillow's fixed-point one
(<= 1 grey level on the CPU, measured in tests/test_gpu_decode.py).

A file the batched decoder should not or cannot take (not a JPEG, CMYK, 12-bit,
arithmetic-coded, corrupt) is decoded by Pillow exactly as on the CPU path, and a
file Pillow cannot read either fails with the CPU path's one-line error naming it.
`device` may be the CPU: torchvision decodes lists there too, which is how the
tests run this module without a GPU.

On CUDA the decoding runs on a side stream of its own, idle before each batch:
torchvision's nvJPEG decoder writes on a private stream that is not ordered after
the caller's, into memory the caching allocator hands out for the caller's stream,
and has been shown to overwrite blocks that queued training kernels still read
(pytorch/vision#9606, H100). The side stream's blocks are never in use by queued
work, and the training stream waits for it, so decoding overlaps the previous step.
"""
import warnings
from pathlib import Path

import numpy as np
import torch

from glag.data.errors import GlagError
from glag.extract.names import DECODE  # the option choices, defined without torch

RESIZE_CHUNK = 64          # images resized per call: bounds the float copy (64 x 3 x 500 x 375 x 4 B = 144 MB)
# Frame markers (SOFn). nvJPEG decodes 8-bit Huffman frames (baseline, extended, progressive); the
# others (lossless, hierarchical, arithmetic-coded) go to Pillow.
GPU_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
OTHER_FRAMES = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
NO_NVJPEG = "not compiled with nvJPEG"
_probed: dict = {}          # device -> None (nvJPEG works) or the reason it does not
_streams: dict = {}         # CUDA device -> the side stream its batches are decoded on


def decode_mode(option: str, device) -> str:
    """--decode auto|cpu|gpu on `device` -> "gpu" (batched, on the device) or "cpu" (Pillow in workers).

    auto is gpu on a CUDA device whose torchvision decodes JPEGs there, else cpu; gpu
    elsewhere is a one-line GlagError naming the option.
    """
    device = torch.device(device)
    if option not in DECODE:
        raise GlagError(f"--decode {option!r}: choose from {list(DECODE)}")
    if option == "cpu" or (option == "auto" and device.type != "cuda"):
        return "cpu"
    if device.type != "cuda":
        raise GlagError(f"--decode gpu: the run's device is {device.type}, the GPU decoder needs CUDA; "
                        "use --decode auto or cpu")
    reason = nvjpeg_problem(device)
    if reason and option == "gpu":
        raise GlagError(f"--decode gpu: torchvision cannot decode JPEGs on {device} ({reason}); use --decode cpu")
    return "cpu" if reason else "gpu"


def nvjpeg_problem(device) -> str | None:
    """None if torchvision decodes a tiny JPEG on `device`, else the first line of why not (cached)."""
    key = str(device)
    if key not in _probed:
        import io

        from PIL import Image
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, "JPEG")
        try:
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)    # nothing queued that the decoder could overwrite
            _decode([torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)], torch.device(device))
            _probed[key] = None
        except (RuntimeError, ImportError, ValueError) as e:
            _probed[key] = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return _probed[key]


def gpu_decodable(data: bytes) -> bool:
    """True for an 8-bit Huffman JPEG in gray or YCbCr: what nvJPEG decodes as libjpeg does.

    Reads the markers up to the frame header. Not a JPEG, CMYK/YCCK (4 components),
    RGB-coded (Adobe transform 0 or components named R, G, B), 12-bit, lossless or
    arithmetic-coded: False, so Pillow decodes it (it converts those as the CPU path does).
    """
    if data[:3] != b"\xff\xd8\xff":
        return False
    pos, adobe_rgb = 2, False
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:                                   # fill byte before a marker
            pos += 1
            continue
        if marker == 0xEE and data[pos + 4:pos + 9] == b"Adobe" and pos + 15 < len(data):
            adobe_rgb = data[pos + 15] == 0                  # APP14 transform flag: 0 = no YCbCr
        if marker in GPU_FRAMES or marker in OTHER_FRAMES:
            if marker in OTHER_FRAMES or pos + 16 >= len(data):
                return False
            precision, components = data[pos + 4], data[pos + 9]
            named_rgb = components == 3 and bytes(data[pos + 10:pos + 17:3]) == b"RGB"
            return precision == 8 and (components == 1 or (components == 3 and not (adobe_rgb or named_rgb)))
        if marker == 0xDA:                                   # a scan before any frame header
            return False
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def read_encoded(path) -> tuple:
    """(path, the file's bytes, gpu_decodable): one file as a DataLoader worker reads it.

    Raises OSError (FileNotFoundError, ...) as reading the file does.
    """
    data = Path(path).read_bytes()
    return path, data, gpu_decodable(data)


def pack(items: list) -> dict:
    """A batch of `read_encoded` items with all bytes in one uint8 tensor: a worker hands it over in one
    shared-memory block, where a tensor per file would hold a file descriptor each (256 per batch)."""
    joined = b"".join(data for _, data, _ in items)
    blob = torch.frombuffer(bytearray(joined), dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
    return {"paths": [path for path, _, _ in items], "blob": blob,
            "sizes": [len(data) for _, data, _ in items], "ok": [ok for _, _, ok in items]}


def unpack(batch: dict) -> list:
    """`pack`'s batch -> [(path, uint8 tensor of the file's bytes (a view), gpu_decodable)] for decode_batch."""
    ends = np.cumsum(batch["sizes"]).tolist()
    starts = [0] + ends[:-1]
    return [(path, batch["blob"][s:e], ok) for path, s, e, ok in zip(batch["paths"], starts, ends, batch["ok"])]


def decode_batch(items: list, channels: int, size: int, device, counts: dict | None = None) -> torch.Tensor:
    """Decode and resize a batch of files on `device`.

    Args:
        items: [(path, the file's bytes as a 1-D uint8 CPU tensor, gpu_decodable)], from `unpack`.
        channels: 1 (Pillow's luma) or 3 (RGB).
        size: output side; every image is squashed to size x size, as the CPU path does.
        device: where to decode and resize (CUDA in real runs; the CPU in tests).
        counts: if given, counts["gpu"] and counts["cpu"] grow by the files each decoder took.
    Returns:
        (B, size, size, channels) uint8 on `device`, in the order of `items`.
    Raises:
        GlagError naming the first file neither decoder can read.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return _decode_batch(items, channels, size, device, counts)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _streams:
        _streams[device] = torch.cuda.Stream(device)
    stream = _streams[device]
    stream.synchronize()                 # the previous batch's resize is done: nvJPEG may reuse its blocks
    with torch.cuda.stream(stream):
        out = _decode_batch(items, channels, size, device, counts)
    caller = torch.cuda.current_stream(device)
    caller.wait_stream(stream)
    out.record_stream(caller)            # not reused by the side stream before the training step has read it
    return out


def _decode_batch(items: list, channels: int, size: int, device: torch.device, counts: dict | None):
    """decode_batch on the current stream."""
    from glag.data.images import decode_image   # Pillow only for the files nvJPEG does not take

    decoded = iter(_decode_jpegs([blob for _, blob, ok in items if ok], device))
    images = [next(decoded) if ok else None for _, _, ok in items]
    out = torch.empty((len(items), size, size, channels), dtype=torch.uint8, device=device)
    done = [i for i, image in enumerate(images) if image is not None]
    if done:
        _put(out, done, resize_square([images[i] for i in done], channels, size))
    for i in (i for i, image in enumerate(images) if image is None):
        out[i] = torch.from_numpy(np.array(decode_image(items[i][0], channels, size))).to(device)  # writable
    if counts is not None:
        counts["gpu"] = counts.get("gpu", 0) + len(done)
        counts["cpu"] = counts.get("cpu", 0) + len(items) - len(done)
    return out


def _put(out: torch.Tensor, rows: list, x: torch.Tensor) -> None:
    """out[rows] = x without a host-to-device index tensor (a blocking copy: it would wait for the stream)."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        out[rows[0]:rows[0] + len(rows)] = x
    else:
        for j, i in enumerate(rows):
            out[i] = x[j]


def _decode(blobs: list, device: torch.device) -> list:
    """torchvision's decode_jpeg on a list: (3, H, W) uint8 RGB tensors on `device`; raises RuntimeError."""
    from torchvision.io import ImageReadMode, decode_jpeg
    with warnings.catch_warnings():
        # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)


def _decode_jpegs(blobs: list, device: torch.device) -> list:
    """Decoded images, None where the decoder rejects a file. One batched call; if any file makes it
    fail (nvJPEG refuses the whole batch), each file alone, so only the bad ones come back None."""
    if not blobs:
        return []
    try:
        return list(_decode(blobs, device))
    except RuntimeError as e:
        if NO_NVJPEG in str(e):
            raise GlagError(f"--decode gpu: torchvision cannot decode JPEGs on {device} ({NO_NVJPEG}); "
                            "use --decode cpu") from None
    out = []
    for blob in blobs:
        try:
            out.append(_decode([blob], device)[0])
        except RuntimeError:
            out.append(None)
    return out


def to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 1, H, W) uint8 with Pillow's integer formula (convert("L")):
    (19595 R + 38470 G + 7471 B + 2^15) >> 16, so gray images match the CPU path exactly."""
    r, g, b = rgb.int().unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16).to(torch.uint8)[:, None]


def resize_square(images: list, channels: int, size: int) -> torch.Tensor:
    """(3, H, W) uint8 images (one device, any sizes) -> (B, size, size, channels) uint8.

    Antialiased bilinear with half-pixel centres, as Pillow's BILINEAR resize; images of one
    shape are resized together (ImageNet has a few common shapes), at most RESIZE_CHUNK at a time.
    """
    out = torch.empty((len(images), channels, size, size), dtype=torch.uint8, device=images[0].device)
    by_shape: dict = {}
    for i, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape[1:]), []).append(i)
    for shape, rows in by_shape.items():
        for start in range(0, len(rows), RESIZE_CHUNK):
            chunk = rows[start:start + RESIZE_CHUNK]
            x = torch.stack([images[i] for i in chunk])
            if channels == 1:
                x = to_luma(x)                       # Pillow converts before it resizes
            if shape != (size, size):
                x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear",
                                                    align_corners=False, antialias=True)
                x = x.round_().clamp_(0, 255).to(torch.uint8)
            _put(out, chunk, x)
    return out.permute(0, 2, 3, 1).contiguous()
