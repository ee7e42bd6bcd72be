"""The part every GLAG HDF5 writer shares: a temp file beside the target, renamed only on success."""
import h5py

from glag.data.atomic import atomic_file
from glag.data.errors import GlagError


class AtomicH5Writer:
    """Opens `self.h5` on a temp file; `_finish()` renames it onto `path`, `abort()` deletes it.

    Subclasses write through `self.h5` and implement `close()`, which checks
    completeness, sets the final attrs and calls `_finish()`. As a context
    manager, an exception in the block aborts; a clean exit closes.
    """

    def __init__(self, path):
        self._ctx = atomic_file(path)
        self.h5 = h5py.File(self._ctx.__enter__(), "w")

    def _finish(self):
        self.h5.attrs["complete"] = True
        self.h5.close()
        self._ctx.__exit__(None, None, None)

    def abort(self):
        self.h5.close()
        try:
            self._ctx.__exit__(GlagError, GlagError("aborted"), None)
        except GlagError:
            pass

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close() if exc_type is None else self.abort()
        return False
