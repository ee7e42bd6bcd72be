"""Keep freed host memory in the process instead of handing it back to the OS at every step.

glibc serves blocks above its mmap threshold with a fresh mmap and unmaps them
when freed, so a CPU training step that allocates and frees ~100 MB of
activations page-faults (and zeroes) all of it again on the next step. With
torch.compile's larger fused buffers that cost 25-30 % of a ResNet-32 step on
the 2-core development machine (`bench/bench_extract.py`, 740 vs 990 img/s).
A trainer reuses the same sizes every step, so keeping the memory is free:
its peak is resident anyway. Called once at process start by `glag-extract`
(a process-wide setting, so not from library code); a no-op off glibc.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLDS = (1 << 30, 1 << 25)   # only blocks above 1 GB get their own mapping (older glibc: 32 MB at most)
TRIM_THRESHOLD = 1 << 31       # never return the top of the heap while training
TOP_PAD = 1 << 28              # grow the heap in 256 MB steps, not per block


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True when glibc took the settings."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = any(mallopt(M_MMAP_THRESHOLD, value) == 1 for value in MMAP_THRESHOLDS)
    return mapped and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_TOP_PAD, TOP_PAD) == 1
