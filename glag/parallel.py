"""Where sweeps and reproduce run their stage-two runs: a joblib backend (--backend, --scheduler).

    loky       worker processes on this machine (joblib's default)
    threading  threads of this process (each reproduce step is a subprocess anyway)
    dask       the workers of a Dask distributed cluster: --scheduler ADDRESS, or a local cluster

Runs talk only through files, so every worker must see the same paths (a shared file system).
Dask is an optional extra (glag.extras: `pip install 'dask[distributed]>=2023'`), imported only when asked for.
"""
import contextlib
import os

import click

from glag.data.errors import GlagError
from glag.extras import install_hint

BACKENDS = ("loky", "threading", "dask")
DASK_INSTALL = install_hint("dask")


def backend_options(default: str):
    """The --backend / --scheduler click options, `default` being the tool's backend of today."""
    def decorate(fn):
        fn = click.option("--scheduler", default="", show_default=True,
                          help="--backend dask: address of a running scheduler (tcp://host:8786); "
                               "empty: a local cluster of --jobs workers.")(fn)
        return click.option("--backend", type=click.Choice(BACKENDS), default=default, show_default=True,
                            help="Where runs execute: loky (processes), threading, or dask (a Dask cluster; "
                                 "the [dask] extra). Every worker must see the same files.")(fn)
    return decorate


def check(backend: str, scheduler: str = "") -> None:
    """Refuse a bad pair before anything runs (a sweep's first run may take long)."""
    if backend not in BACKENDS:
        raise GlagError(f"--backend {backend!r}: choose from {list(BACKENDS)}")
    if scheduler and backend != "dask":
        raise GlagError(f"--scheduler {scheduler}: only --backend dask uses a scheduler")
    if backend == "dask":
        _import_distributed()


def _import_distributed():
    try:
        import distributed
        import joblib._dask  # noqa: F401  (registers joblib's "dask" backend)
    except ImportError:
        raise GlagError(f"--backend dask: Dask distributed is not installed; {DASK_INSTALL}") from None
    return distributed


@contextlib.contextmanager
def backend(name: str = "loky", scheduler: str = "", jobs: int = 2):
    """Context in which joblib.Parallel calls run on backend `name`.

    Args:
        name: loky, threading or dask.
        scheduler: dask only: address of a running scheduler; empty: a local cluster made (and closed) here.
        jobs: workers of that local cluster.
    """
    check(name, scheduler)
    if name != "dask":
        with _config(name):
            yield
        return
    distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(_client(distributed, scheduler))
        else:
            # one thread per worker: each run sets its own torch threads, as the loky workers do
            cluster = stack.enter_context(distributed.LocalCluster(n_workers=max(jobs, 1), threads_per_worker=1,
                                                                   dashboard_address=None))
            client = stack.enter_context(distributed.Client(cluster))
        click.echo(f"dask: {client.scheduler.address}, "
                   f"{len(client.scheduler_info().get('workers', {}))} worker(s)", err=True)
        stack.enter_context(_config("dask"))
        yield


def _client(distributed, address: str):
    try:
        return distributed.Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise GlagError(f"--scheduler {address}: cannot connect ({type(e).__name__}: {e}); "
                        "is a dask scheduler running there?") from None


def _config(name: str):
    import joblib
    # parallel_config (joblib >= 1.3) is the current name; parallel_backend the older one
    if hasattr(joblib, "parallel_config"):
        return joblib.parallel_config(backend=name)
    return joblib.parallel_backend(name)


def threads_per_run(name: str, jobs: int):
    """Torch threads a worker may give one run: the machine's cores shared by the loky processes;
    None (leave the worker's setting) where workers are threads of one process or another machine's."""
    if name != "loky":
        return None
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))
