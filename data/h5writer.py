"""The part every GLAG HDF5 writer shares: a temp file renamed only on success, clean write errors,
per-chunk checksums and the content fingerprint.

Why the sink: when a write fails (disk full, file-size limit), HDF5 reports it late (when its
chunk cache is evicted, inside object deallocation, as a stream of ignored exceptions) and then
crashes (SIGSEGV) when the file is closed. Through h5py's file-object driver HDF5 never sees the
failure: `_Sink` records the first failed write and drops every later one, so the file closes
cleanly, the temp file is deleted and the writer raises one GlagError naming the file.
"""
import contextlib
import functools
import hashlib
from pathlib import Path

import h5py

from glag.data.atomic import atomic_file, write_error
from glag.data.errors import GlagError

# Every numeric dataset carries a Fletcher-32 checksum per chunk, so a damaged chunk fails its read
# (h5py raises OSError, turned into a GlagError by the readers). Variable-length strings cannot take it.
CHECKSUM = {"fletcher32": True}


class _Sink:
    """A binary file for h5py's fileobj driver that remembers its first failed write and drops the rest."""

    def __init__(self, path):
        self.file = open(path, "w+b", buffering=0)
        self.error = None           # (OSError, bytes the file needed at least) after the first failure

    def seek(self, offset, whence=0):
        return self.file.seek(offset, whence)

    def tell(self):
        return self.file.tell()

    def read(self, size=-1):
        return self.file.read(size)

    def readinto(self, buf):
        return self.file.readinto(buf)

    def write(self, buf):
        view = memoryview(buf).cast("B")
        if self.error is None:
            start, done = self.file.tell(), 0
            try:
                while done < len(view):      # a raw write may be short (at the file-size limit)
                    done += self.file.write(view[done:])
            except OSError as e:
                self.error = (e, start + len(view))
        return len(view)

    def truncate(self, size=None):
        if self.error is None:
            try:
                self.file.truncate(size)
            except OSError as e:
                self.error = (e, size)
        return size

    def flush(self):
        pass

    def close(self):
        self.file.close()


def fingerprint(hashes: dict) -> str:
    """The stored fingerprint: 32 hex digits of a SHA-256 over each key and its running digest, keys sorted."""
    total = hashlib.sha256()
    for key in sorted(hashes):
        total.update(key.encode() + hashes[key].digest())
    return total.hexdigest()[:32]


def checked(method):
    """Decorate a writer method: a write the disk refused ends the writer with one GlagError."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            out = method(self, *args, **kwargs)
        except Exception:
            self._check()          # a failed write explains any error that followed it
            raise
        self._check()
        return out
    return wrapper


class AtomicH5Writer:
    """Opens `self.h5` on a temp file; `_finish()` renames it onto `path`, `abort()` deletes it.

    Subclasses write through `self.h5`, hash what they write with `_digest`, decorate
    their writing methods with `checked` and implement `close()`, which checks
    completeness, sets the final attrs and calls `_finish()`. As a context manager,
    an exception in the block aborts; a clean exit closes.

    Args:
        need_bytes: the file's expected size, for the message when the disk cannot hold it.
    """

    def __init__(self, path, need_bytes=None):
        self.path, self.need_bytes, self._hash, self._open = Path(path), need_bytes, {}, True
        self._ctx = atomic_file(path, need_bytes)
        tmp, self._sink = self._ctx.__enter__(), None
        try:
            self._sink = _Sink(tmp)
            self.h5 = h5py.File(self._sink, "w")
        except BaseException as e:
            if self._sink is not None:
                self._sink.close()
            self._ctx.__exit__(type(e), e, e.__traceback__)   # removes the temp and re-raises
            raise

    def _digest(self, key, *chunks):
        h = self._hash.setdefault(key, hashlib.sha256())
        for c in chunks:
            h.update(c)

    def _check(self):
        if self._open and self._sink.error is not None:
            exc, written = self._sink.error
            self.abort()
            raise write_error(self.path, exc, self.need_bytes, written) from None

    def _finish(self):
        self.h5.attrs["complete"] = True
        self._check()
        try:
            self.h5.close()
            self._sink.close()
        except BaseException:
            self.abort()
            raise
        self._check()            # the last metadata goes out at close
        self._open = False
        self._ctx.__exit__(None, None, None)

    def abort(self):
        """Close and delete the temp file; safe to call twice and after a failed write."""
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(Exception):
            self.h5.close()
        with contextlib.suppress(Exception):
            self._sink.close()
        with contextlib.suppress(GlagError):
            self._ctx.__exit__(GlagError, GlagError("aborted"), None)

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return False
        self._check()            # a refused write is the cause: say that, not what followed
        self.abort()
        return False
