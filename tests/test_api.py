"""The Python API (glag.api) and `--config`: the stages from Python and from saved configs."""
import json

import pytest
from click.testing import CliRunner

import glag.api as api
from glag.classify.cli import main as classify
from glag.classify.config import run_hash
from glag.data.errors import GlagError


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Stage one on digits (1 epoch), a store, and a GLAG run, all through glag.api."""
    root = tmp_path_factory.mktemp("api")
    bank = api.extract(dataset="digits", epochs=1, threads=1, out=str(root / "bank.h5"), current=False)
    store = api.generate(bank=bank, beta_init=0.6)
    run = api.classify(bank=str(bank), epochs=2, plots=False, deploy=False, run="g")
    return bank, store, run


def test_the_three_stages_run_from_python(made):
    bank, store, run = made
    assert bank.is_file() and store.is_file() and store.parent == bank.parent / "synthetic"
    loaded = api.load_run(run)
    assert 0 <= loaded["metrics"]["test"]["overall"] <= 1 and loaded["beta"]["refit"] is True
    assert loaded["config"]["cfg"]["store"] == str(store)                         # latest.json's store


def test_a_saved_config_reruns_with_one_change(made):
    bank, store, run = made
    again = api.classify(config=run / "config.json", beta_init=0.3, run="g03")
    cfg, before = api.load_run(again)["config"]["cfg"], api.load_run(run)["config"]["cfg"]
    assert cfg["beta_init"] == 0.3 and cfg["bank"] == before["bank"] and cfg["store"] == before["store"]
    assert {k for k in cfg if cfg[k] != before[k]} == {"beta_init", "run"}


def test_cli_config_reproduces_the_run_hash(made, tmp_path):
    _, _, run = made
    res = CliRunner().invoke(classify, ["run", "--config", str(run / "config.json"), "--run", "same",
                                        "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    saved = lambda folder: json.loads((folder / "config.json").read_text())["cfg"]
    assert run_hash(saved(tmp_path / "same")) == run_hash(saved(run))
    bad = CliRunner().invoke(classify, ["run", "--config", str(run / "head.pt")])
    assert bad.exit_code == 1 and "no readable saved config" in bad.output and "--config" in bad.output


def test_bad_options_raise_glag_errors(made):
    bank, _, _ = made
    with pytest.raises(GlagError, match="unknown option"):
        api.classify(bank=str(bank), beta=0.3)
    with pytest.raises(GlagError, match="glag-classify run"):
        api.classify(bank=str(bank), method="nope")
    with pytest.raises(GlagError, match="not a finished stage-two run"):
        api.load_run(bank.parent)


@pytest.fixture(scope="module")
def deployed(made):
    """A cRT run of the api bank written with its model.pt (the bank's stage-one checkpoint is beside it)."""
    bank, _, _ = made
    return api.classify(bank=str(bank), method="crt", epochs=2, plots=False, deploy=True, run="crt")


def test_predict_reproduces_the_runs_test_predictions_from_raw_images(deployed):
    import numpy as np
    from glag.data.datasets import load_dataset
    from glag.data.splits import group_accuracy
    raw = load_dataset("digits").test                      # uint8 (N, 8, 8, 1), in the bank's test order
    out = api.predict(deployed, raw.images)
    metrics = api.load_run(deployed)["metrics"]
    acc = group_accuracy(out.classes, raw.labels, np.asarray(metrics["groups"]["of_class"]))
    assert acc["per_class"] == pytest.approx(metrics["test"]["per_class"], abs=1e-9)
    assert out.probs.shape == (len(raw.labels), 10) and np.allclose(out.probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(out.probs.argmax(1), out.classes)


def test_predict_reads_paths_pil_images_and_the_model_file(deployed, tmp_path):
    import numpy as np
    from PIL import Image
    from glag.data.datasets import load_dataset
    arrays = load_dataset("digits").test.images[:6]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a[:, :, 0]).convert("RGB").save(paths[-1])     # RGB files: brought to the model's 1 channel
    expected = api.predict(deployed, arrays).classes
    assert np.array_equal(api.predict(deployed / "model.pt", [str(p) for p in paths]).classes, expected)
    assert np.array_equal(api.predict(deployed, [Image.open(p) for p in paths]).classes, expected)
    assert api.predict(deployed, arrays[0]).classes.shape == (1,)                           # one image alone
    big = [np.asarray(Image.fromarray(a[:, :, 0]).resize((32, 32))) for a in arrays]        # resized back to 8
    assert api.predict(deployed, big).classes.shape == (6,)


def test_predict_refuses_runs_without_a_model_and_non_images(made, deployed):
    import numpy as np
    _, _, run = made                                   # deploy=False
    with pytest.raises(GlagError, match="no model.pt"):
        api.predict(run, np.zeros((1, 8, 8, 1), np.uint8))
    with pytest.raises(GlagError, match="uint8"):
        api.predict(deployed, [np.zeros((8, 8), np.float32)])


def test_every_entry_point_raises_one_glag_error_for_bad_input(made, deployed, tmp_path):
    """Issue #18: click's BadParameter, pathlib's TypeError and numpy's "need at least one array" came through."""
    import numpy as np
    bank, _, _ = made
    image = np.zeros((8, 8), np.uint8)
    cases = [(lambda: api.classify(config=tmp_path / "none.json"), "--config .*none.json: no readable saved config"),
             (lambda: api.classify(config=bank), "a feature bank .* cannot configure glag-classify run"),
             (lambda: api.generate(bank=123), "glag-generate: bank=123 is not a path"),
             (lambda: api.extract(epochs=[1]), "glag-extract: .*"),
             (lambda: api.predict(deployed, []), "predict: no images"),
             (lambda: api.predict(deployed, [tmp_path / "none.png"]), "none.png: no such image file; check the path"),
             (lambda: api.predict(deployed, [image], batch_size=0), "batch_size=0"),
             (lambda: api.predict(deployed, [image], device="gpu0"), "device 'gpu0': choose auto, cpu"),
             (lambda: api.load_run(123), "load_run: folder=123 is not a path"),
             (lambda: api.load_results(123), "load_results: paths=123 is not a path")]
    for call, message in cases:
        with pytest.raises(GlagError, match=message):
            call()


def test_load_results_has_one_row_per_run_below_a_folder(made, deployed, monkeypatch):
    import sys
    import types
    bank, _, run = made
    monkeypatch.setitem(sys.modules, "pandas", None)                 # pandas absent: plain dicts
    rows = api.load_results(bank.parent)
    by_name = {r["name"]: r for r in rows}
    assert {"g", "crt"} <= set(by_name) and len(rows) == len({r["run"] for r in rows})
    g = by_name["g"]
    assert g["method"] == "glag" and g["bank"] == str(bank) and g["seed"] == 0 and g["bank_seed"] == 0
    assert g["bank_loss"] == "graloss" and g["beta_init"] == 0.6 and g["epochs"] == 2
    assert g["test_overall"] == api.load_run(run)["metrics"]["test"]["overall"]
    assert {"val_few", "test_many", "dataset"} <= set(g)
    fake = types.SimpleNamespace(DataFrame=lambda rows: ("frame", rows))
    monkeypatch.setitem(sys.modules, "pandas", fake)                 # pandas present: its DataFrame
    assert api.load_results(run)[0] == "frame" and len(api.load_results(run)[1]) == 1


def test_table_reads_parent_folders_and_prints_csv(made, deployed, tmp_path):
    bank, _, run = made
    res = CliRunner().invoke(classify, ["table", "--csv", str(bank.parent)])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("run,label,method") and "test_overall" in lines[0]
    names = {line.split(",")[0] for line in lines[1:]}
    assert {"g", "crt"} <= names
    md = CliRunner().invoke(classify, ["table", str(run), str(bank.parent)])        # a run named twice: one row
    assert md.exit_code == 0 and md.output.count("| g (") == 1
    empty = CliRunner().invoke(classify, ["table", str(tmp_path)])
    assert empty.exit_code != 0 and "no metrics.json in or under" in empty.output
