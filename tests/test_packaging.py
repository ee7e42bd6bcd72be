"""GLAG as a package: one `glag` namespace, versions, and a wheel that works from a folder with its own `data/`."""
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import glag
from glag.classify.cli import main as classify
from glag.data import provenance
from glag.extract.cli import main as extract
from glag.generate.cli import main as generate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("main, prog", [(extract, "glag-extract"), (generate, "glag-generate"),
                                        (classify, "glag-classify")])
def test_every_tool_says_its_version(main, prog):
    res = CliRunner().invoke(main, ["--version"], prog_name=prog)
    assert res.exit_code == 0 and res.output.startswith(f"{prog}: glag {glag.__version__} (")


def test_the_commit_comes_from_glags_own_checkout_only(tmp_path):
    assert provenance._is_glag_checkout(ROOT) == (ROOT / ".git").exists()
    other = tmp_path / "their-project"
    (other / ".git").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "their-project"\n')
    assert not provenance._is_glag_checkout(other)


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs GLAG's git checkout")
def test_the_wheel_installs_and_runs_beside_a_users_own_data_package(tmp_path):
    """Build the wheel, install it alone (no editable GLAG on the path), and use it from a folder that holds
    its own `data/` and `extract/` packages: imports, console scripts and `torchrun -m` must all find GLAG's."""
    wheels, target, user, src = (tmp_path / n for n in ("wheels", "site", "user-project", "src"))
    # build from a copy of the source files (no stale build/ folder of earlier builds can leak in)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = dict(os.environ, GLAG_BUILD_COMMIT=provenance.git_commit())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, env=env)
    wheel = next(wheels.glob("glag_lt-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    names = {p.name for p in target.iterdir()}
    assert "glag" in names and not names & {"data", "extract", "generate", "classify"}   # one namespace
    for pkg in ("data", "extract"):                                                      # the user's own packages
        (user / pkg).mkdir(parents=True)
        (user / pkg / "__init__.py").write_text("MINE = True\n")
    env = dict(os.environ, PYTHONPATH=str(target), DATASET="")

    def run(*cmd):
        out = subprocess.run(cmd, cwd=user, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout + out.stderr

    code = ("import glag, data, extract; from glag.extract.backbones import load_deployed; "
            "from glag.classify.run import run_stage2; import glag.data.bank as b; "
            "assert data.MINE and extract.MINE and glag.__file__.startswith(%r); "
            "from glag.data.provenance import code_version; print(code_version())" % str(target))
    version = run(sys.executable, "-c", code)
    assert f"glag {glag.__version__} ({provenance.git_commit()})" in version             # recorded at build time
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for tool in scripts:                                          # every console script, so no subpackage is missing
        assert glag.__version__ in run(str(target / "bin" / tool), "--version")
    run(sys.executable, "-c", "import glag.api, glag.cli.util, glag.reproduce.run, glag.extract.group_cli")
    help_text = run(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "-m", "glag.extract.cli",
                    "--help")
    assert "--dataset" in help_text


def test_the_distribution_name_and_extras_are_glag_lt_and_every_hint_installs_them():
    """`glag` on the package index is another project: the distribution is glag-lt, and no message or doc
    tells users to install `glag[...]` (which would install, or with -U replace this with, that project)."""
    from glag.extras import DISTRIBUTION, EXTRAS, install_hint
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "glag-lt"
    extras = project["optional-dependencies"]
    assert {k: extras[k] for k in EXTRAS} == {k: [v] for k, v in EXTRAS.items()}
    assert install_hint("tensorboard") == "pip install 'tensorboard>=2.10' (the glag-lt[tensorboard] extra)"
    files = subprocess.run(["git", "ls-files", "*.py", "*.md", "Makefile", "*.toml", "*.sh"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    wrong = [f for f in files if re.search(r"(?<![-\w])glag\[[a-z,]+\]|pip install [\"']?glag\b(?!-lt)", (ROOT / f).read_text())
             and f != "tests/test_packaging.py"]
    assert not wrong, wrong
