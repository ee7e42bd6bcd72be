"""What every output records about how it was made: config, code version, time."""
import datetime
import json
import subprocess
from pathlib import Path


def package_version() -> str:
    from glag import __version__
    return __version__


def git_commit() -> str:
    """The commit GLAG was built from: recorded in glag/_build.py when a wheel is built (setup.py), else
    read from git when this code runs from GLAG's own checkout (with '-dirty' for local edits); else
    'unknown'. A wheel installed inside somebody else's repository never reports that repository's commit."""
    try:
        from glag._build import COMMIT
        return COMMIT
    except ImportError:
        pass
    root = Path(__file__).resolve().parent.parent
    if not _is_glag_checkout(root):
        return "unknown"
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _is_glag_checkout(root: Path) -> bool:
    """root is a git work tree of GLAG itself: its pyproject names GLAG's distribution and .git is right there."""
    from glag.extras import DISTRIBUTION
    try:
        return (root / ".git").exists() and f'name = "{DISTRIBUTION}"' in (root / "pyproject.toml").read_text()
    except OSError:
        return False


def code_version() -> str:
    return f"glag {package_version()} ({git_commit()})"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def config_json(cfg: dict) -> str:
    """Canonical JSON of a resolved config: sorted keys, paths as strings."""
    return json.dumps(cfg, sort_keys=True, default=str)
