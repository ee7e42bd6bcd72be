"""What every output records about how it was made: config, code version, time."""
import datetime
import json
import subprocess
from importlib import metadata
from pathlib import Path


def package_version() -> str:
    try:
        return metadata.version("glag")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def git_commit() -> str:
    """The commit of the source tree, with '-dirty' for local edits; 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def code_version() -> str:
    return f"glag {package_version()} ({git_commit()})"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def config_json(cfg: dict) -> str:
    """Canonical JSON of a resolved config: sorted keys, paths as strings."""
    return json.dumps(cfg, sort_keys=True, default=str)
