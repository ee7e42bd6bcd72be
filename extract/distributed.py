"""Multi-process stage one (torchrun / DistributedDataParallel) and the device choice.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 every
process joins one group (nccl on CUDA, gloo on CPU). Rank 0 writes the
checkpoint and the bank; the feature dump gathers every rank's rows into it.
Without those variables everything here is a no-op on one process.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from glag.data.errors import GlagError
from glag.extract.names import AMP, DEVICES  # noqa: F401  (the option choices, defined without torch)


@dataclass
class Context:
    """Where this process runs: its device, rank and the world size."""
    device: torch.device
    rank: int = 0
    world: int = 1
    amp: str = "auto"

    @property
    def bf16(self) -> bool:
        """bf16 autocast: always on CUDA under "auto"; on the CPU only when asked (--amp bf16)."""
        return self.amp == "bf16" or (self.amp == "auto" and self.cuda)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def pick_device(option: str, local_rank: int = 0) -> torch.device:
    """--device auto|cpu|cuda -> torch.device (cuda:<local rank> under torchrun)."""
    if option not in DEVICES:
        raise GlagError(f"--device {option!r}: choose from {list(DEVICES)}")
    if option == "cuda" and not torch.cuda.is_available():
        raise GlagError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    if option == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_context(device_option: str, amp: str = "auto") -> Context:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_option, local_rank)
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN time its algorithms once (bit-exact resume is a CPU guarantee).
        torch.backends.cudnn.benchmark = True
    if world <= 1:
        return Context(device, amp=amp)
    if not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(device, rank=tdist.get_rank(), world=tdist.get_world_size(), amp=amp)


def close_context(ctx: Context) -> None:
    if ctx.world > 1 and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.world > 1:
        tdist.barrier()


def wrap_model(model, ctx: Context):
    """DDP around `model` when there are several processes, else the model itself."""
    if ctx.world == 1:
        return model
    ids = [ctx.device.index] if ctx.cuda else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gather_rows(tensor, ctx: Context, total: int):
    """Undo the rank-strided split of a chunk: rank r held rows r, r + world, ...

    Args:
        tensor: (m, ...) this rank's rows (every rank has the same m).
        total: rows in the chunk before padding (<= m * world).
    Returns:
        (total, ...) the chunk's rows in their original order (on every rank).
    """
    if ctx.world == 1:
        return tensor[:total]
    parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
    tdist.all_gather(parts, tensor.contiguous())
    stacked = torch.stack(parts, dim=1)                                  # (m, world, ...)
    return stacked.reshape(-1, *tensor.shape[1:])[:total]


def all_reduce_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum a small tensor of statistics over ranks (loss, hits, images)."""
    if ctx.world > 1:
        tdist.all_reduce(values)
    return values
