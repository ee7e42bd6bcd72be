"""Where sweeps and reproduce run their stage-two runs: a joblib backend (--backend, --scheduler).

    loky       worker processes on this machine (joblib's default)
    threading  threads of this process (each reproduce step is a subprocess anyway)
    dask       the workers of a Dask distributed cluster: --scheduler ADDRESS, or a local cluster

Runs talk only through files, so every worker must see the same paths (a shared file system).
Dask is an optional extra (glag.extras: `pip install 'dask[distributed]>=2023'`), imported only when asked for.

A loky worker dies with the process that started it: killed with kill -9, a sweep cannot stop its
workers, which would go on writing run folders; each worker watches its parent (`die_with_parent`,
loky's initializer) and, once it is gone, interrupts its run (whose temp folder is then removed)
and exits. loky's resource tracker ends by itself once no process holds its pipe.
"""
import contextlib
import os
import signal
import threading
import time

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
    # loky workers start with die_with_parent (passed on to loky's executor as its initializer)
    params = {"initializer": die_with_parent, "initargs": (os.getpid(),)} if name == "loky" else {}
    # parallel_config (joblib >= 1.3) is the current name; parallel_backend the older one
    if hasattr(joblib, "parallel_config"):
        return joblib.parallel_config(backend=name, **params)
    return joblib.parallel_backend(name, **params)


def threads_per_run(name: str, jobs: int):
    """Torch threads a worker may give one run: the machine's cores shared by the loky processes;
    None (leave the worker's setting) where workers are threads of one process or another machine's."""
    if name != "loky":
        return None
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


PARENT_POLL_S = 0.5     # how often a worker looks for its parent
PARENT_GRACE_S = 5.0    # time the interrupted run has to remove its temp folder before the worker exits


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"parent process gone (signal {signum})")


def die_with_parent(parent: int) -> None:
    """Start a daemon thread that ends this process once `parent` (the pid that started it) is gone.

    A process whose parent died is adopted by another one (init, or a subreaper), so its parent pid
    changes: that is the sign, checked every PARENT_POLL_S (portable, unlike Linux's PR_SET_PDEATHSIG,
    which also fires when the parent's *thread* that started the worker ends). The running task gets
    a KeyboardInterrupt first (through SIGUSR1 to the main thread, which also cuts a sleep or a blocking
    read short; loky workers ignore SIGINT), so that its writes clean up; after PARENT_GRACE_S the
    process exits. Runs in the worker's main thread, as loky's initializer does.
    """
    if os.getppid() != parent:      # the parent is already gone
        os._exit(1)
    signal.signal(signal.SIGUSR1, _interrupted)
    main = threading.main_thread().ident

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(PARENT_GRACE_S)
        os._exit(1)
    threading.Thread(target=watch, name="glag-die-with-parent", daemon=True).start()
