"""The import rules of STYLE.md §2: stages talk through files only."""
import subprocess
import sys


def run(code):
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage_two_never_loads_torchvision():
    # any torchvision import pulls in torchvision.models (seconds of start-up, GPU libraries)
    run("import generate.cli, classify.cli, sys; assert 'torchvision' not in sys.modules, 'torchvision loaded'")


def test_data_imports_no_stage():
    run("import data.bank, data.store, data.datasets, data.longtail, data.splits, sys; "
        "bad = [m for m in ('extract', 'generate', 'classify', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad")


def test_generate_imports_only_data():
    run("import generate.cli, sys; bad = [m for m in ('extract', 'classify') if m in sys.modules]; assert not bad, bad")


def test_classify_imports_only_losses_from_extract():
    run("import classify.cli, sys; bad = [m for m in sys.modules if m.startswith(('extract.', 'generate'))"
        " and not m.startswith('extract.losses')]; assert not bad, bad")
