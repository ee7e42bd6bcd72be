"""`glag-reproduce`: recipes, the plan and its layout, skipping what is done, the results table,
and the paper recipes starting on fixture files in their datasets' exact formats.

Most end-to-end tests run the tools in this process (`in_process` replaces the
subprocess launcher; the command lines are the same), so the file stays fast;
`test_real_subprocesses` runs the real thing once.
"""
import contextlib
import importlib
import io
import json
import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from glag.reproduce import run as rep
from glag.reproduce.cli import main
from glag.reproduce.plan import parse_tool_args, plan, to_argv
from glag.reproduce.recipes import ALL_METHODS, METHODS, RECIPES, find_recipe, register_method, register_recipe
from glag.reproduce.state import agrees, same_value
from glag.reproduce.table import csv_text, summarise
from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.extract.losses import LOSSES
from tests.test_datasets import COLOURS, cifar_batch, save_image, write_imagenet_lt, write_inat, write_jpeg_tree, write_tiny

TINY = ["--recipe", "digits", "--losses", "ce,graloss", "--seeds", "2", "--methods", "crt,glag+AD+KD",
        "--extract-args", "--epochs 1 --threads 1", "--jobs", "1"]


class InProcess:
    """Stands in for `reproduce.launch`: runs the same command line's click main here, records each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, cmd, log_path, echo=lambda line: None):
        module = cmd[2].split()[1]                      # "from <module> import main; main(...)"
        self.calls.append((module, cmd[3:]))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                importlib.import_module(module).main.main(cmd[3:], standalone_mode=False)
                code = 0
            except Exception as e:  # what a subprocess would report as exit 1
                print(f"Error: {e}")
                code = 1
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(out.getvalue())
        return code


def reproduce(args, monkeypatch, launcher=None):
    if launcher is not None:
        monkeypatch.setattr(rep, "launch", launcher)
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """2 losses x 2 seeds x (stage one, store, cRT, GLAG) on digits, 1 epoch of stage one."""
    root = tmp_path_factory.mktemp("runs")
    launcher = InProcess()
    with pytest.MonkeyPatch.context() as mp:
        result = reproduce([*TINY, "--runs-root", root], mp, launcher)
    assert result.exit_code == 0, result.output
    return root, launcher, result.output


# ---------------------------------------------------------------- registries and parsing
def test_recipes_name_registered_losses_and_methods():
    assert {"fashion-mnist", "cifar10-jpeg-cpu", "cifar10-jpeg-gpu", "tiny-imagenet-gpu", "cifar100-paper",
            "imagenet-lt-paper", "inat-paper"} <= set(RECIPES)
    for recipe in RECIPES.values():
        assert set(recipe.losses) <= set(LOSSES) and set(recipe.methods) <= set(METHODS), recipe.name
        assert recipe.seeds >= 1 and recipe.device in ("cpu", "gpu") and recipe.note
    assert set(ALL_METHODS) == {"crt", "lws", "tau_norm", "posthoc_la", "mislas", "glag", "glag+AD", "glag+AD+KD",
                                "glag+KD-tuned"}
    with pytest.raises(KeyError):
        register_recipe("digits", dataset="digits", ims=(10.0,))
    with pytest.raises(KeyError):
        register_method("crt", method="crt")
    with pytest.raises(GlagError, match="unknown stage-one loss"):
        register_recipe("bad-recipe", dataset="digits", ims=(10.0,), losses=("nope",))
    assert "bad-recipe" not in RECIPES


def test_auto_recipe_follows_dataset_and_machine():
    assert find_recipe("auto", "cifar10-jpeg", cuda=False).name == "cifar10-jpeg-cpu"
    assert find_recipe("auto", "cifar10-jpeg", cuda=True).name == "cifar10-jpeg-gpu"
    assert find_recipe("auto", "inat", cuda=False).name == "inat-paper"           # an alias
    assert find_recipe("auto", "tiny", cuda=False).name == "tiny-imagenet-cpu"
    assert find_recipe("auto", "tiny-imagenet", cuda=True).name == "tiny-imagenet-gpu"
    with pytest.raises(GlagError, match="--recipe"):
        find_recipe("auto", "folder", cuda=False)
    with pytest.raises(GlagError, match="--dataset 'digits'"):
        find_recipe("fashion-mnist", "digits", cuda=False)


def test_tool_args_parse_into_options_and_back():
    opts = parse_tool_args("--epochs 8 --no-flip --amp=bf16 --lr 0.05 --compile", "extract")
    assert opts == {"epochs": "8", "flip": False, "amp": "bf16", "lr": "0.05", "compile": True}
    assert to_argv(opts) == ["--epochs", "8", "--no-flip", "--amp", "bf16", "--lr", "0.05", "--compile"]
    for bad, needle in (("epochs 8", "expected --option"), ("--seed 3", "set by reproduce")):
        with pytest.raises(GlagError, match=needle):
            parse_tool_args(bad, "extract")


def test_values_compare_across_text_and_types():
    assert same_value(8, "8") and same_value(0.1, "0.1") and same_value(True, "true") and same_value("bf16", "bf16")
    assert not same_value(8, "9") and not same_value(False, True) and not same_value("fp32", "bf16")
    # options a config does not record (another loss's) and runtime ones are not compared
    assert agrees({"epochs": 8, "loss": "ce"}, {"epochs": "8", "graloss_c": "3"})
    assert agrees({"threads": 2}, {"threads": "1"}, skip=("threads",)) and not agrees({"epochs": 8}, {"epochs": 9})
    # a bank from before views counts as views 0, so asking for views re-dumps it...
    assert not agrees({"epochs": 8}, {"views": "8"}) and agrees({"epochs": 8}, {"views": "0", "mixup": "0"})
    from glag.reproduce.state import DUMP_KEYS, RUNTIME_KEYS
    # ...from its checkpoint, which the dump options never make out of date
    assert agrees({"epochs": 8}, {"views": "8", "views_dtype": "float32"}, RUNTIME_KEYS | DUMP_KEYS)


def test_plan_layout_and_store_only_for_glag(tmp_path):
    cfg = dict(dataset="digits", im=10.0, losses=["ce", "ldam"], seeds=[0, 3], methods=["crt", "glag+AD"],
               runs_root=str(tmp_path), data_root="", extract={"epochs": 2}, generate={}, classify={"plots": False})
    steps = plan(cfg)
    assert [s.tool for s in steps[:4]] == ["extract", "generate", "classify", "classify"] and len(steps) == 16
    bank = tmp_path / "digits-im10" / "ldam" / "seed3" / "bank.h5"
    last = steps[-1]
    assert last.bank == bank and last.out == bank.parent / "stage2" / "glag+AD" and last.label == "ldam seed3 glag+AD"
    assert last.options["store"] == str(bank.parent / "synthetic" / "reproduce.h5")
    assert last.options["ad"] is True and last.options["kd"] is False and last.options["seed"] == 3
    assert steps[-4].options == {"dataset": "digits", "loss": "ldam", "seed": 3, "out": str(bank), "im": 10.0,
                                 "epochs": 2, "current": False}          # reproduce never moves the current bank
    no_glag = plan(dict(cfg, methods=["crt", "tau_norm"], im=None))
    assert "generate" not in {s.tool for s in no_glag} and "store" not in no_glag[1].options
    assert no_glag[0].bank.parent.parent.parent.name == "digits-listed" and "im" not in no_glag[0].options


def test_a_tuned_method_is_a_grid_of_runs_and_val_alone_picks_its_row(tmp_path):
    cfg = dict(dataset="digits", im=10.0, losses=["ce"], seeds=[0, 1], methods=["glag+KD-tuned"],
               runs_root=str(tmp_path), data_root="", extract={}, generate={}, classify={})
    steps = [s for s in plan(cfg) if s.tool == "classify"]
    assert len(steps) == 2 * 6 * 2 and {s.family for s in steps} == {"glag+KD-tuned"}
    first = steps[0]
    assert first.name == "glag+KD-tuned~beta_init0_gamma0" and first.out.name == first.name
    assert (first.options["beta_init"], first.options["gamma"], first.options["ad"]) == (0.0, 0.0, False)
    # fake results: val prefers beta 0.4 / gamma 0.1 on seed 0, beta 1 / gamma 0 on seed 1; test prefers others
    for s in steps:
        best = {0: (0.4, 0.1), 1: (1.0, 0.0)}[s.seed] == (s.options["beta_init"], s.options["gamma"])
        s.out.mkdir(parents=True)
        val, test = (0.9, 0.5) if best else (0.5, 0.95)
        (s.out / "metrics.json").write_text(json.dumps({"val": {"overall": val}, "test": {"overall": test}}))
    import glag.reproduce.table as table
    rows, _, chosen = table.collect(steps)
    assert chosen[("ce", "glag+KD-tuned")] == ["beta_init0.4_gamma0.1", "beta_init1_gamma0"]
    assert [a["overall"] for a in rows[("ce", "glag+KD-tuned")]["test"]] == [0.5, 0.5]   # the val pick's test
    assert "chosen on val per seed: beta_init0.4_gamma0.1, beta_init1_gamma0" in table.markdown(
        rows, dict(cfg, recipe="r", note=""), chosen=chosen)


def test_summary_is_mean_and_sample_std_over_seeds():
    accs = [{"overall": 0.5, "many": 0.9, "medium": None, "few": 0.1},
            {"overall": 0.7, "many": 0.9, "medium": None, "few": 0.2},
            {"overall": 0.9, "many": 0.9, "medium": None, "few": None}]
    s = summarise(accs)
    assert s["overall"][0] == pytest.approx(0.7) and s["overall"][1] == pytest.approx(0.2) and s["overall"][2] == 3
    assert s["many"][1] == pytest.approx(0.0) and s["medium"] == (None, None, 0)
    assert s["few"][0] == pytest.approx(0.15) and s["few"][2] == 2
    line = csv_text({("ce", "crt"): {"val": accs[:1], "test": accs}}).splitlines()[1].split(",")
    assert line[:3] == ["ce", "crt", "3"] and line[3:5] == ["0.5000", ""]      # val: one seed, no std


# ---------------------------------------------------------------- end to end (in process)
def test_tiny_reproduction_writes_table_csv_plot_and_config(tiny_run):
    root, launcher, output = tiny_run
    exp = root / "digits-im10"
    tools = [m for m, _ in launcher.calls]
    assert tools.count("glag.extract.cli") == 4 and tools.count("glag.generate.cli") == 4 and tools.count("glag.classify.cli") == 8
    for loss in ("ce", "graloss"):
        for seed in (0, 1):
            folder = exp / loss / f"seed{seed}"
            with Bank(folder / "bank.h5") as bank:
                assert bank.loss == loss and bank.config["seed"] == seed and bank.config["epochs"] == 1
            for method in ("crt", "glag+AD+KD"):
                cfg = json.loads((folder / "stage2" / method / "config.json").read_text())["cfg"]
                assert cfg["seed"] == seed and cfg["ad"] == (method != "crt") and cfg["synthetic"] == (method != "crt")
            assert (folder / "logs" / "stage-one.log").is_file()
    md = (exp / "results" / "table.md").read_text()
    for row in ("ce bank / stage one", "ce bank / crt", "graloss bank / glag+AD+KD"):
        assert f"| {row} |" in md
    assert "±" in md and "`--epochs 1 --threads 1`" in md and md in output
    rows = (exp / "results" / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 and rows[0].startswith("loss,method,seeds,val_overall_mean")
    assert all(r.split(",")[2] == "2" for r in rows[1:])
    assert (exp / "results" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((exp / "results" / "config.json").read_text())
    assert record["cfg"]["seeds"] == [0, 1] and "glag" in record["code_version"]
    assert record["upstream"]["banks"]["graloss/seed1"]["config"]["loss"] == "graloss"
    assert "[16/16]" in output


def test_second_invocation_runs_nothing(tiny_run, monkeypatch):
    root, _, _ = tiny_run
    table = root / "digits-im10" / "results" / "table.md"
    before = table.read_text()

    def refuse(cmd, *a, **k):
        raise AssertionError(f"launched {cmd[2:]} although everything is done")
    result = reproduce([*TINY, "--runs-root", root], monkeypatch, refuse)
    assert result.exit_code == 0, result.output
    assert result.output.count("done, skipped") == 16 and table.read_text() == before
    listing = reproduce([*TINY, "--runs-root", root, "--dry-run"], monkeypatch).output
    assert listing.count(": done: ") == 16 and "to run" not in listing


def test_changed_stage_two_option_reruns_only_those_runs(tiny_run, monkeypatch, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_run[0], root)               # a copy: the other tests keep the original as it was
    launcher = InProcess()
    args = ["--recipe", "digits", "--losses", "ce", "--seeds", "1", "--methods", "crt",
            "--extract-args", "--epochs 1 --threads 1", "--classify-args", "--epochs 3", "--runs-root", root]
    listing = reproduce([*args, "--dry-run"], monkeypatch).output
    assert "stage one: done" in listing and "crt: to run" in listing
    result = reproduce(args, monkeypatch, launcher)
    assert result.exit_code == 0, result.output
    assert [m for m, _ in launcher.calls] == ["glag.classify.cli"] and "--overwrite" in launcher.calls[0][1]
    run = root / "digits-im10" / "ce" / "seed0" / "stage2" / "crt"
    assert json.loads((run / "config.json").read_text())["cfg"]["epochs"] == 3


def test_bad_input_is_one_line_error(tmp_path, monkeypatch):
    for args, needle in ((["--dataset", "folder"], "no reproduction recipe"),
                         (["--recipe", "digits", "--methods", "crt,nope"], "unknown stage-two method"),
                         (["--recipe", "inat-paper", "--im", "100"], "listed long tail"),
                         (["--recipe", "digits", "--seeds", "x"], "--seeds"),
                         (["--recipe", "digits", "--classify-args", "--bank x"], "set by reproduce")):
        result = reproduce([*args, "--runs-root", tmp_path], monkeypatch)
        assert result.exit_code == 1 and needle in result.output and result.output.count("\n") == 1, result.output


def test_dry_run_lists_every_step_and_env_dataset_only_feeds_auto(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASET", "digits")                       # the Makefile exports its default
    result = reproduce(["--recipe", "fashion-mnist", "--im", "all", "--dry-run", "--runs-root", tmp_path], monkeypatch)
    assert result.exit_code == 0, result.output
    # per bank: stage one, the store, 8 methods and the 12 runs of glag+KD-tuned's grid
    assert "fashion-mnist-im100: 330 steps" in result.output and "fashion-mnist-im10: 330 steps" in result.output
    assert result.output.count("to run") == 660 and "[10/330] ce seed0 glag+AD+KD" in result.output
    assert "glag-extract --dataset fashion-mnist --loss ce --seed 0" in result.output and "--epochs 8" in result.output
    assert not (tmp_path / "fashion-mnist-im100").exists()          # a dry run writes nothing
    auto = reproduce(["--dry-run", "--seeds", "1", "--runs-root", tmp_path], monkeypatch)
    assert auto.exit_code == 0 and "digits-im10: 110 steps" in auto.output
    monkeypatch.delenv("DATASET")
    assert "needs --dataset" in reproduce(["--runs-root", tmp_path], monkeypatch).output


def test_failed_step_names_itself_and_its_log(tmp_path, monkeypatch):
    result = reproduce(["--recipe", "digits", "--losses", "ce", "--seeds", "1", "--methods", "crt",
                        "--extract-args", "--epochs 0", "--runs-root", tmp_path], monkeypatch, InProcess())
    assert result.exit_code == 1 and "[1/2] ce seed0 stage one failed" in result.output
    assert "--epochs 0" in result.output and "stage-one.log" in result.output
    assert not (tmp_path / "digits-im10" / "ce" / "seed0" / "bank.h5").exists()


# ---------------------------------------------------------------- the real subprocesses
def test_real_subprocesses(tmp_path, monkeypatch):
    args = ["--recipe", "digits", "--losses", "ce", "--seeds", "1", "--methods", "tau_norm",
            "--extract-args", "--epochs 1 --threads 1", "--runs-root", tmp_path]
    result = reproduce(args, monkeypatch)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "digits-im10" / "ce" / "seed0"
    assert "epoch 1/1" in (folder / "logs" / "stage-one.log").read_text()
    assert "[1/2] ce seed0 stage one: epoch 1/1" in result.output         # stage one's epoch lines come through
    assert (folder / "stage2" / "tau_norm" / "metrics.json").is_file()
    assert "| ce bank / tau_norm |" in (tmp_path / "digits-im10" / "results" / "table.md").read_text()


# ---------------------------------------------------------------- the paper recipes on fixture files
def write_cifar100_fixture(root, per_class=2):
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    cifar_batch(base / "train", np.repeat(np.arange(100), per_class), b"fine_labels")
    cifar_batch(base / "test", np.arange(100), b"fine_labels")
    names = [f"fine{k}".encode() for k in range(100)]
    (base / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))


def write_inat_fixture(root):
    base = root / "inat2018"
    write_inat(base)
    for i in (1, 2, 3, 10):                      # write_inat saves only the first image
        save_image(base / "train_val2018" / "x" / f"{i}.jpg", COLOURS[i % 3])


def write_cifar10_jpeg_fixture(root):
    write_jpeg_tree(root / "cifar10-jpeg", n_train=3)


def write_tiny_fixture(root):
    write_tiny(root / "tiny-imagenet-202", n_train=3)


# recipe -> (fixture writer, reproduce options, glag-extract options making one epoch exactly one step)
PAPER = {
    "cifar100-paper": (write_cifar100_fixture, ["--im", "1"], "--val-per-class 1 --batch-size 100"),
    "imagenet-lt-paper": (lambda r: write_imagenet_lt(r / "imagenet-lt", r / "imagenet-lt"), [], "--batch-size 2"),
    "inat-paper": (write_inat_fixture, [], "--batch-size 4"),
    **{name: (write_cifar10_jpeg_fixture, ["--im", "1"], "--val-per-class 1 --batch-size 4")
       for name in ("cifar10-jpeg-cpu", "cifar10-jpeg-gpu")},
    **{name: (write_tiny_fixture, ["--im", "1"], "--val-per-class 1 --batch-size 4")
       for name in ("tiny-imagenet-cpu", "tiny-imagenet-gpu")},
}
BACKBONE = {"cifar10-jpeg-cpu": "resnet32", "cifar10-jpeg-gpu": "resnet32", "cifar100-paper": "resnet32",
            "imagenet-lt-paper": "resnet10", "inat-paper": "resnet50", "tiny-imagenet-gpu": "resnet10",
            "tiny-imagenet-cpu": "resnet32"}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipe_runs_one_step_on_fixture_files(name, tmp_path, monkeypatch):
    write, options, one_step = PAPER[name]
    write(tmp_path / "data")
    launcher = InProcess()
    result = reproduce(["--recipe", name, "--losses", "graloss", "--seeds", "1", "--methods", "crt",
                        "--data-root", tmp_path / "data", "--runs-root", tmp_path / "runs", *options,
                        "--extract-args", f"--epochs 1 --threads 1 --workers 0 {one_step}"], monkeypatch, launcher)
    assert result.exit_code == 0, result.output
    recipe = RECIPES[name]
    bank_file = next((tmp_path / "runs").glob("*/graloss/seed0/bank.h5"))
    with Bank(bank_file) as bank:
        assert bank.dataset == recipe.dataset and bank.config["epochs"] == 1
        n_train, batch = bank.rows("train"), bank.config["batch_size"]
        assert n_train // batch == 1                      # drop_last: exactly one SGD step
        assert bank.backbone == BACKBONE[name]
        if name.startswith("tiny"):
            assert bank.config["image_size"] == (32 if name.endswith("cpu") else 64)
        assert bank.config["graloss_s"] == (0.5 if name == "inat-paper" else 1.0)
    log = (bank_file.parent / "logs" / "stage-one.log").read_text()
    assert "epoch 1/1" in log
    run_cfg = json.loads((bank_file.parent / "stage2" / "crt" / "config.json").read_text())["cfg"]
    assert run_cfg["kd_s"] == (0.5 if name == "inat-paper" else 1.0)
