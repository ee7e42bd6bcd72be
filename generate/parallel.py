"""Threads for the per-class and per-batch work (joblib across classes, a bounded pool across batches),
and handing freed memory back.

On a few cores, many small LAPACK calls and GEMMs run faster as one
single-threaded torch op per worker thread than as one multi-threaded op at a
time (measured on a 2-core machine: per-class QR 5x, sampling batches 6x under
load, where OpenMP barriers stall). So workers run with torch's intra-op
threads set to 1, and the previous setting comes back afterwards. Results do
not depend on the number of workers: each unit of work has its own inputs and
its own random stream.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from joblib import Parallel, delayed


def resolve_jobs(n_jobs: int) -> int:
    """0 = auto (cores, at most 8: every worker holds a batch in memory); -1 = all cores."""
    cores = os.cpu_count() or 1
    return min(cores, 8) if n_jobs == 0 else cores if n_jobs < 0 else n_jobs


class _single_threaded_torch:
    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        return False


def _alone(fn):
    """fn, run with one intra-op thread: OpenMP's thread count is a per-thread setting,
    so each worker thread must set it itself."""
    def run(item):
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        return fn(item)
    return run


def parallel_classes(fn, classes, n_jobs: int = 1):
    """Run fn(k) for every class k, in threads when n_jobs != 1."""
    classes, n_jobs = list(classes), resolve_jobs(n_jobs)
    if n_jobs == 1 or len(classes) < 2:
        for k in classes:
            fn(k)
        return
    with _single_threaded_torch():
        Parallel(n_jobs=n_jobs, prefer="threads")(delayed(_alone(fn))(k) for k in classes)


def ordered_map(fn, items, n_jobs: int = 1):
    """Yield fn(item) in order, computing up to n_jobs items ahead in threads."""
    n_jobs = resolve_jobs(n_jobs)
    if n_jobs == 1:
        yield from map(fn, items)
        return
    with _single_threaded_torch(), ThreadPoolExecutor(n_jobs) as pool:   # n_jobs batches in memory at most
        pending = []
        for item in items:
            pending.append(pool.submit(_alone(fn), item))
            if len(pending) >= n_jobs:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def release_memory():
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere).

    Per-class buffers freed after the QR and many mid-sized temporaries leave
    the heap fragmented, so without this the process keeps memory it no
    longer uses and the sampling phase stacks its batches on top of it.
    """
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
