"""The import rules of STYLE.md §2: stages talk through files only."""
import subprocess
import sys


def run(code):
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage_two_never_loads_torchvision():
    # any torchvision import pulls in torchvision.models (seconds of start-up, GPU libraries)
    run("import glag.generate.cli, glag.generate.run, glag.classify.cli, glag.classify.run, sys; "
        "assert 'torchvision' not in sys.modules, 'torchvision loaded'")


def test_data_imports_no_stage():
    run("import glag.data.bank, glag.data.store, glag.data.datasets, glag.data.longtail, glag.data.splits, sys; "
        "bad = [m for m in ('glag.extract', 'glag.generate', 'glag.classify', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad")


def test_generate_imports_only_data():
    run("import glag.generate.cli, glag.generate.run, sys; bad = [m for m in ('glag.extract', 'glag.classify') if m in sys.modules]; "
        "assert not bad, bad")


def test_classify_imports_only_losses_from_extract():
    # the losses and their torch-free names (glag.extract.names: loss options without torch)
    run("import glag.classify.cli, glag.classify.run, sys; bad = [m for m in sys.modules if m.startswith(('glag.extract.', 'glag.generate'))"
        " and not m.startswith(('glag.extract.losses', 'glag.extract.names'))]; assert not bad, bad")


def test_reproduce_sits_above_the_stages():
    # the orchestrator imports the stages' tools; no stage imports it back
    run("import glag.classify.run, glag.generate.run, glag.extract.cli, sys; "
        "assert 'glag.reproduce' not in sys.modules and 'glag.reproduce.run' not in sys.modules")
