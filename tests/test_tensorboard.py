"""--tensorboard DIR on every tool: the events carry the numbers of the JSON records, one sub-folder per run;
the option changes no result and no identity; without the package it is refused in one line, before any work.

The `tensorboard` extra is installed by `make test` / `.ci/run` (pyproject's [tensorboard]): these tests
read the events back with TensorBoard's own reader and do not skip without it."""
import json
import sys

import pytest
from click.testing import CliRunner

from glag.classify.cli import main as classify
from glag.cli.tensorboard import INSTALL
from glag.extract.cli import main as extract
from glag.extract.group_cli import main as extract_group
from glag.generate.cli import main as generate
from tests.test_classify_cli import make_bank_and_store

STAGE_ONE = ["--dataset", "digits", "--threads", "1", "--workers", "0"]


def invoke(main, *args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def scalars(folder) -> dict:
    """{tag: [(step, value), ...]} of every event file in `folder`, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def same(events, expected):
    """Events are float32: equal to the JSON's float64 numbers to float32 precision."""
    assert [s for s, _ in events] == [s for s, _ in expected]
    assert [v for _, v in events] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-7)


def check_stage_one(folder, history):
    got = scalars(folder)
    for key in ("loss", "train_acc", "lr", "alpha", "seconds"):
        if history[0][key] is None:                       # alpha of a loss without one (CE): no curve
            assert f"stage1/{key}" not in got
            continue
        same(got[f"stage1/{key}"], [(h["epoch"], h[key]) for h in history])
    same(got["stage1/images_per_s"], [(h["epoch"], h["images"] / h["seconds"]) for h in history])


def test_stage_one_events_are_the_history(tmp_path):
    out, board = tmp_path / "bank.h5", tmp_path / "tb"
    invoke(extract, *STAGE_ONE, "--loss", "graloss", "--epochs", 2, "--out", out, "--tensorboard", board)
    history = json.loads((tmp_path / "bank.history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert [p.name for p in board.iterdir()] == ["graloss-seed0"]
    check_stage_one(board / "graloss-seed0", history)


def test_group_writes_one_folder_per_run(tmp_path):
    board = tmp_path / "tb"
    invoke(extract_group, *STAGE_ONE, "--losses", "ce,graloss", "--seeds", "0", "--epochs", 1,
           "--runs-root", tmp_path / "runs", "--tensorboard", board)
    assert sorted(p.name for p in board.iterdir()) == ["ce-seed0", "graloss-seed0"]
    for loss in ("ce", "graloss"):
        history = json.loads(next((tmp_path / "runs").rglob(f"{loss}/seed0/bank.history.json")).read_text())
        check_stage_one(board / f"{loss}-seed0", history)


def test_stage_one_option_is_a_runtime_key():
    """A checkpoint or bank resumes / counts as done whether or not --tensorboard is given."""
    from glag.extract.checkpoint import check_compatible
    from glag.reproduce.state import RUNTIME_KEYS, agrees
    cfg = {"loss": "ce", "epochs": 2, "tensorboard": None}
    check_compatible("ckpt", cfg, dict(cfg, tensorboard="tb"))
    assert agrees(cfg, dict(cfg, tensorboard="tb"), RUNTIME_KEYS)


def test_stage_two_events_are_the_run_records(tmp_path):
    bank, _ = make_bank_and_store(tmp_path)
    board = tmp_path / "tb"
    invoke(classify, "run", "--bank", bank, "--epochs", 3, "--run", "g", "--no-plots", "--tensorboard", board)
    run = tmp_path / "stage2" / "g"
    history = json.loads((run / "history.json").read_text())
    beta = json.loads((run / "beta.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    got = scalars(board / "g")
    for name in ("search", "refit"):                       # AD with its refit (GLAG's default): two passes
        records = [h for h in history if h["pass"] == name]
        for key in ("loss", "val_overall", "lr", "rows"):
            same(got[f"stage2/{name}/{key}"], [(h["epoch"], h[key]) for h in records])
    same(got["stage2/beta_mean"], [(e, sum(b) / len(b)) for e, b in enumerate(beta["trajectory"])])
    for split in ("val", "test"):
        for group in ("overall", "many", "medium", "few"):
            value = metrics[split][group]
            if value is None or value != value:           # a group without classes here: no curve
                assert f"stage2/final/{split}/{group}" not in got
            else:
                same(got[f"stage2/final/{split}/{group}"], [(3, value)])
    assert "stage2/final/test/overall" in got


def test_stage_two_identity_ignores_the_option(tmp_path):
    from glag.classify.config import run_hash
    from glag.cli.util import read_saved_config
    bank, _ = make_bank_and_store(tmp_path)
    invoke(classify, "run", "--bank", bank, "--epochs", 1, "--method", "crt", "--no-plots", "--no-deploy",
           "--tensorboard", tmp_path / "tb")
    run = next((tmp_path / "stage2").iterdir())
    cfg = read_saved_config(run / "config.json")
    assert run_hash(dict(cfg, tensorboard="")) == run_hash(cfg) and run.name.endswith(run_hash(cfg))
    assert [p.name for p in (tmp_path / "tb").iterdir()] == [run.name]


def test_generate_writes_a_summary_and_the_same_store(tmp_path):
    bank, _ = make_bank_and_store(tmp_path, pointer=False)
    plan = invoke(generate, "--bank", bank, "--dry-run")     # "store <path>: the generator of ..."
    plain = plan.split("store ", 1)[1].split(":", 1)[0]
    store = invoke(generate, "--bank", bank, "--tensorboard", tmp_path / "tb").strip().splitlines()[-1]
    assert store == plain                                  # the option is not part of the store's identity
    from glag.cli.util import read_saved_config
    assert "tensorboard" not in read_saved_config(store)
    from pathlib import Path
    got = scalars(tmp_path / "tb" / f"generate-{Path(store).stem}")
    assert got["generate/rows"][0][1] > 0 and {"generate/tail_classes", "generate/seconds_moments"} <= set(got)


def test_without_the_option_nothing_is_written(tmp_path):
    from glag.cli.tensorboard import NoBoard, open_board
    assert type(open_board(None, "x")) is NoBoard and type(open_board("", "x")) is NoBoard


@pytest.mark.parametrize("tool", ["extract", "extract-group", "generate", "classify"])
def test_missing_package_is_one_line_before_any_work(tmp_path, monkeypatch, tool):
    bank, _ = make_bank_and_store(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # `import` of it now raises ImportError
    main, args = {"extract": (extract, [*STAGE_ONE, "--epochs", 1, "--out", tmp_path / "b.h5"]),
                  "extract-group": (extract_group, [*STAGE_ONE, "--epochs", 1, "--runs-root", tmp_path / "runs"]),
                  "generate": (generate, ["--bank", bank]),
                  "classify": (classify, ["run", "--bank", bank, "--epochs", 1])}[tool]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--tensorboard", tmp_path / "tb"]])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --tensorboard: the tensorboard package is not installed; {INSTALL}"]
    assert not (tmp_path / "tb").exists() and not (tmp_path / "b.h5").exists()
    assert not (tmp_path / "stage2").exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == ["latest.json", "s.h5"]


def test_missing_package_from_python_is_a_glag_error(monkeypatch):
    from glag.cli.tensorboard import open_board
    from glag.data.errors import GlagError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(GlagError, match=r"--tensorboard: .*pip install 'tensorboard>=2\.10' \(the glag-lt\[tensorboard\]"):
        open_board("tb", "run")
