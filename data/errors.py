"""The one exception type every stage raises for bad input, and the messages for unreadable files.

CLIs turn it into a one-line `Error: ...` and exit code 1 (`glag.cli.util.friendly_errors`).
The message must name the file or option at fault and say what to do.
"""
import errno


class GlagError(Exception):
    """Bad input or an unusable file; the message is shown to the user as-is."""


def open_error(path, exc: Exception, what: str, fix: str) -> GlagError:
    """h5py could not open `path`: permission (never a reason to delete it), a file that is not HDF5 at
    all (a wrong path: nothing to delete either) or a damaged HDF5 file.

    Args:
        what: "feature bank" / "synthetic store"; fix: how to make a new one (e.g. "rerun `make features`").
    """
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return GlagError(f"{path}: permission denied reading the {what}; ask its owner for read access "
                         "(chmod a+r) or work on a copy")
    if not _looks_hdf5(path):
        return GlagError(f"{path}: not an HDF5 file, so not a {what} (another kind of file?); check the path")
    return GlagError(f"{path}: a damaged or truncated HDF5 file ({exc.__class__.__name__}), not a readable {what}; "
                     f"restore a good copy or {fix}")


def _looks_hdf5(path) -> bool:
    """True when the file starts with HDF5's signature (or cannot be checked: then assume damage)."""
    import h5py
    try:
        return bool(h5py.is_hdf5(path))
    except (OSError, ValueError):
        return True


def read_error(path, dataset: str, exc: OSError, fix: str) -> GlagError:
    """A read of `dataset` failed: a Fletcher-32 checksum mismatch (corruption) or another I/O error."""
    text = str(exc)
    if "filter returned failure" in text or "checksum" in text.lower():
        return GlagError(f"{path}: {dataset} is corrupted (its checksum does not match its bytes); the file was "
                         f"damaged after it was written: restore a good copy or {fix}")
    first = text.splitlines()[0] if text else exc.__class__.__name__
    return GlagError(f"{path}: cannot read {dataset} ({first}); the file is damaged or unreadable: restore a good "
                     f"copy or {fix}")
