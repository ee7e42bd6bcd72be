"""Build hook only (metadata lives in pyproject.toml): a wheel records the commit it was built from in
glag/_build.py, so an installed GLAG reports its own version, never the git state of wherever it is installed."""
import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _commit() -> str:
    """GLAG_BUILD_COMMIT when set (a build from a source archive has no .git), else git describe."""
    if os.environ.get("GLAG_BUILD_COMMIT"):
        return os.environ["GLAG_BUILD_COMMIT"]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class BuildWithCommit(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "glag" / "_build.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f'"""Written when this GLAG was built."""\nCOMMIT = {_commit()!r}\n')


setup(cmdclass={"build_py": BuildWithCommit})
