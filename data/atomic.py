"""Write-then-rename helpers, so that no reader ever sees a half-written output.

Every temp file or folder is named `.<target>.<pid>@<host>.<random>.tmp`, beside
its target. A process killed before the rename (kill -9, power loss) cannot clean
up after itself, so the next writer in that folder does: a temp whose process is
gone on this host is stale and is removed, with one line on stderr. Write errors
that are the disk's fault (full, quota, file-size limit) become one-line
GlagErrors naming the file; the temp is removed on every error path.

SIGTERM (what `timeout`, schedulers and `kill` send) is handled as Ctrl-C while a temp
exists (`sigterm_as_interrupt`; the console scripts extend it to the whole command): it
raises `Terminated`, a KeyboardInterrupt, so the same clean-up runs and no temp is left.
Python prints and drops an exception raised inside a finalizer or weakref callback, so a
SIGTERM that lands there would be lost: the handler also records it, and every rename onto
a target checks the record first (`check_interrupted`). Functions that C libraries call back
(h5py's file-object driver) are marked with `defer_interrupts`: an exception raised inside them
leaves HDF5 half-way through a write (the process crashes at exit), and so does one raised in
h5py's own Python code (`defer_interrupts_in`): there a SIGTERM or Ctrl-C is recorded and sent
again shortly, to be raised once outside (or at the writer's next check, if sooner).
"""
import contextlib
import errno
import itertools
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from glag.data.errors import GlagError

DISK_FULL = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file-size limit (ulimit -f) was reached",
             errno.EDQUOT: "the disk quota is exceeded"}
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_.-]+)\.[a-z0-9_]+\.tmp$")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every clean-up on the way out runs."""


_received = []            # signals the handler saw since it was installed (one of them may have been dropped)
_CALLBACKS = set()        # code of the functions marked by defer_interrupts
_PACKAGES = []            # folders of the libraries registered by defer_interrupts_in
RETRY_S = 0.02            # a deferred signal is sent again after this long, to land outside the library
_delivered = []           # an interrupt was raised: later signals (resent ones) leave its clean-up alone


def defer_interrupts(func):
    """Mark `func` as called back from C code that an exception would leave half-way (h5py's file object):
    a SIGTERM or Ctrl-C arriving while it runs is deferred (see _handler)."""
    _CALLBACKS.add(func.__code__)
    return func


def defer_interrupts_in(folder) -> None:
    """Defer a signal arriving while the Python code of a library under `folder` runs (h5py's: an exception
    between its calls into HDF5 leaves HDF5's state half-changed, and the process crashing at exit)."""
    _PACKAGES.append(str(folder))


def _deferred(frame) -> bool:
    while frame is not None:
        if frame.f_code in _CALLBACKS or frame.f_code.co_filename.startswith(tuple(_PACKAGES)):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int) -> KeyboardInterrupt:
    _delivered.append(signum)
    return Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame):
    """Raise the signal's interrupt where that is safe; inside deferred code, record it and send it again
    shortly (a writer's next check_interrupted raises it sooner)."""
    if _delivered:
        return
    _received.append(signum)
    if _deferred(frame):
        retry = threading.Timer(RETRY_S, _resend, (signum,))
        retry.daemon = True
        retry.start()
        return
    raise _interrupt(signum)


def _resend(signum: int):
    if not _delivered and signal.getsignal(signum) is _handler:     # not raised meanwhile, still handled here
        os.kill(os.getpid(), signum)


def check_interrupted():
    """Raise the interrupt of a signal that arrived under sigterm_as_interrupt, even one whose exception was
    dropped or deferred."""
    if _received:
        raise _interrupt(_received[-1])


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Terminated (a KeyboardInterrupt) instead of ending the process at once,
    and both it and Ctrl-C are recorded for check_interrupted.

    Only in the main thread (where Python runs signal handlers) and only for a signal whose handler is
    Python's default (SIG_DFL for SIGTERM, default_int_handler for SIGINT): a handler of the calling
    program, or of an enclosing block, is left alone. The old handlers come back after the block.
    """
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    mine = {} if threading.current_thread() is not threading.main_thread() else \
        {sig: old for sig, old in defaults.items() if signal.getsignal(sig) is old}
    if not mine:
        yield
        return
    _received.clear()
    _delivered.clear()
    for sig in mine:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in mine.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def atomic_file(path, need_bytes=None):
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds.

    The temp file sits in the same folder so the final `os.replace` is atomic
    (same filesystem). On any exception the temp file is removed; a disk-full
    error becomes a GlagError naming `path` (and `need_bytes`, when known).
    """
    path = Path(path)
    made = _make_folders(path)
    remove_stale_temps(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        _remove_empty(made)
        raise write_error(path, e, need_bytes) from None
    os.close(fd)
    try:
        with sigterm_as_interrupt():
            yield Path(tmp)
        check_interrupted()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should read like any new file
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _remove_empty(made)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            raise write_error(path, e, need_bytes) from None
        raise


@contextlib.contextmanager
def atomic_dir(path, overwrite=False):
    """Yield a temp folder beside `path`; it becomes `path` only if the block succeeds."""
    path = Path(path)
    made = _make_folders(path)
    remove_stale_temps(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as e:
        _remove_empty(made)
        raise write_error(path, e) from None
    try:
        with sigterm_as_interrupt():
            yield tmp
        check_interrupted()
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a run folder should read like any new folder
        if path.exists() and overwrite:
            shutil.rmtree(path)
        os.rename(tmp, path)  # fails if another writer got there first: never merge two runs
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            inside = Path(e.filename) if e.filename else None
            name = path / inside.relative_to(tmp) if inside and inside.is_relative_to(tmp) else path
            raise write_error(name, e) from None
        raise


def write_error(path, exc: OSError, need_bytes=None, written=None) -> GlagError:
    """The one-line message for a failed write of `path`: what went wrong and, for a full disk, the bytes
    it needed (`need_bytes` when known in advance, else more than `written`)."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return GlagError(f"{path}: permission denied writing there ({exc.strerror or exc}); make "
                         f"{Path(path).parent} writable or write elsewhere (--out)")
    if exc.errno not in DISK_FULL:
        return GlagError(f"{path}: cannot be written ({exc.strerror or exc}); check {Path(path).parent} or "
                         "write elsewhere (--out)")
    need = f"it needs about {_size(need_bytes)}" if need_bytes else \
        f"it needed more than {_size(written)}" if written else "its size is not known in advance"
    return GlagError(f"{path}: not written, {DISK_FULL[exc.errno]} ({need}); free space (or raise the limit) "
                     "and rerun")


def _size(n) -> str:
    n = int(n)
    if n < 2 ** 20:
        return f"{n:,} bytes"
    return f"{n:,} bytes ({n / 2 ** 30:.2f} GiB)" if n >= 2 ** 30 else f"{n:,} bytes ({n / 2 ** 20:.1f} MiB)"


def _make_folders(path: Path) -> list:
    """Create the folders up to `path`'s parent; returns those it created, deepest first."""
    made = list(itertools.takewhile(lambda p: not p.exists(), [path.parent, *path.parent.parents]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return made


def _remove_empty(folders: list) -> None:
    """A failed write leaves no folder behind that it created (and that nobody else filled meanwhile)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def _temp_prefix(path: Path) -> str:
    """.<name>.<pid>@<host>. : enough for a later writer to tell whether the temp's process is still alive."""
    return f".{path.name}.{os.getpid()}@{_host()}."


def target_of(temp) -> Path:
    """The path a temp file or folder of this module becomes (itself if it is not one)."""
    temp = Path(temp)
    m = _TEMP.match(temp.name)
    return temp.with_name(temp.name[1:m.start("pid") - 1]) if m else temp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temps(folder) -> list:
    """Remove the temp files and folders in `folder` left by killed writers on this host; say so on stderr.

    A temp is stale when the process named in it no longer exists. Temps of other hosts
    (a shared filesystem) are left alone: their processes cannot be checked from here.
    Returns the names removed.
    """
    host, removed = _host(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or m["host"] != host or _alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except FileNotFoundError:
            pass            # another process cleaned it first
        except OSError:
            continue        # not ours to remove (permissions): leave it
    if removed:
        print(f"removed {len(removed)} temp file(s) of killed processes from {folder}: {', '.join(sorted(removed))}",
              file=sys.stderr)
    return removed


def _umask() -> int:
    """The process umask; read from /proc where possible, since setting it to read it races with threads."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def available_memory():
    """Bytes of memory the kernel says are available (Linux MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_bytes(folder) -> int:
    """Free space on the filesystem that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free
