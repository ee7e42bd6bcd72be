"""The part every GLAG HDF5 writer shares: a temp file renamed only on success, clean write errors,
per-chunk checksums, the content fingerprint and the digests that glag-verify checks.

The contract a writer (BankWriter, StoreWriter, any new one) follows to get all of it:

  - write through `self.h5` and, for every dataset, call `self._digest(key, bytes, ...)` with the
    dataset's path as `key` and its bytes in C order and in the stored dtype, as they are written
    (rows may come in any number of calls, in row order). A key that is not one dataset's path
    (the bank's `classes` and `head`) needs its own recipe in `glag.data.verify.COMPOSITE`.
  - in `close()`, set the attrs that describe the file, `fingerprint(self._hash)` among them,
    then call `self._finish()`.

`_finish()` then writes two root attrs (DIGESTS, ATTRS_DIGEST): `digests`, the JSON object
{key: SHA-256 hex} of every running hash, and `attrs_digest`, a SHA-256 over every other
attribute of every object in the file (`attrs_digest(h5)`). `glag-verify` recomputes both and
names the dataset (or the attribute) that no longer matches; readers call `check_attrs` on
open (cheap: attributes are small), so damaged metadata is refused before any work. The
Fletcher-32 chunk checksums cannot see every change (0x0000 and 0xFFFF are equal to a ones'-
complement sum, so an erased 0.0 reads as NaN with a valid checksum); the digests can.

Why the sink: when a write fails (disk full, file-size limit), HDF5 reports it late (when its
chunk cache is evicted, inside object deallocation, as a stream of ignored exceptions) and then
crashes (SIGSEGV) when the file is closed. Through h5py's file-object driver HDF5 never sees the
failure: `_Sink` records the first failed write and drops every later one, so the file closes
cleanly, the temp file is deleted and the writer raises one GlagError naming the file.
"""
import contextlib
import functools
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from glag.data.atomic import atomic_file, check_interrupted, defer_interrupts, defer_interrupts_in, write_error
from glag.data.errors import GlagError

# Every numeric dataset carries a Fletcher-32 checksum per chunk, so a damaged chunk fails its read
# (h5py raises OSError, turned into a GlagError by the readers). Variable-length strings cannot take it.
CHECKSUM = {"fletcher32": True}
DIGESTS, ATTRS_DIGEST = "digests", "attrs_digest"
defer_interrupts_in(Path(h5py.__file__).parent)    # no Ctrl-C or SIGTERM raised inside h5py (glag.data.atomic)


class _Sink:
    """A binary file for h5py's fileobj driver that remembers its first failed write and drops the rest.

    HDF5 calls these methods back: an exception raised in them (a signal's) would leave the file half-way
    through a write, so a SIGTERM or Ctrl-C there is deferred to the writer's next `_check` (glag.data.atomic).
    """

    def __init__(self, path):
        self.file = open(path, "w+b", buffering=0)
        self.error = None           # (OSError, bytes the file needed at least) after the first failure

    @defer_interrupts
    def seek(self, offset, whence=0):
        return self.file.seek(offset, whence)

    @defer_interrupts
    def tell(self):
        return self.file.tell()

    @defer_interrupts
    def read(self, size=-1):
        return self.file.read(size)

    @defer_interrupts
    def readinto(self, buf):
        return self.file.readinto(buf)

    @defer_interrupts
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

    @defer_interrupts
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


def _attr_bytes(value) -> bytes:
    """One attribute value as bytes that tell its kind and content apart (str, bytes or a numpy value)."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    arr = np.asarray(value)
    if arr.dtype.kind == "O":          # an array of variable-length strings
        return b"o" + repr(arr.shape).encode() + b"".join(_attr_bytes(v) for v in arr.ravel())
    return b"a" + arr.dtype.str.encode() + repr(arr.shape).encode() + np.ascontiguousarray(arr).tobytes()


def attrs_digest(h5) -> str:
    """SHA-256 hex over every attribute (name and value) of every object in the open file `h5`, objects
    and names sorted, the root's ATTRS_DIGEST left out. Raises OSError/UnicodeDecodeError (h5py's) for an
    attribute whose bytes cannot be read back."""
    names = [""]
    h5.visit(names.append)
    total = hashlib.sha256()
    for name in sorted(names):
        obj = h5[name] if name else h5
        for key in sorted(obj.attrs.keys()):
            if name == "" and key == ATTRS_DIGEST:
                continue
            total.update(f"{name}\0{key}\0".encode() + _attr_bytes(obj.attrs[key]) + b"\0")
    return total.hexdigest()


def check_attrs(h5, path, fix: str) -> None:
    """Refuse a file whose attributes (config, metrics, provenance) were damaged after it was written.

    Files from before ATTRS_DIGEST pass (their attributes have no digest); a JSON attribute that
    no longer parses is refused either way, since every reader of it would fail later.
    """
    from glag.data.errors import GlagError
    damaged = f"the file was damaged after it was written: restore a good copy or {fix}"
    try:
        stored = h5.attrs.get(ATTRS_DIGEST)
        got = attrs_digest(h5) if stored is not None else None
    except (OSError, UnicodeDecodeError, KeyError) as e:
        raise GlagError(f"{path}: its attributes cannot be read ({type(e).__name__}); {damaged}") from None
    if stored is not None and got != stored:
        raise GlagError(f"{path}: its attributes (config, metrics, provenance) do not match their digest; {damaged}")
    for name, key in (("", "config"), ("", "upstream"), ("stage1", "metrics")):
        obj = h5.get(name) if name else h5
        if obj is not None and key in obj.attrs:
            try:
                json.loads(obj.attrs[key])
            except (ValueError, TypeError, UnicodeDecodeError):
                raise GlagError(f"{path}: attribute {name + '/' if name else ''}{key} is not valid JSON; "
                                f"{damaged}") from None


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
        try:
            check_interrupted()   # a SIGTERM or Ctrl-C the sink deferred
        except BaseException:
            self.abort()
            raise

    def _finish(self):
        self.h5.attrs["complete"] = True
        self.h5.attrs[DIGESTS] = json.dumps({k: h.hexdigest() for k, h in self._hash.items()}, sort_keys=True)
        self.h5.attrs[ATTRS_DIGEST] = attrs_digest(self.h5)     # last: it covers every other attribute
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
