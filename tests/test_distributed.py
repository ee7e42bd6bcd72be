"""Stage one under torchrun: 2 CPU processes (gloo) write one bank with every row once, in order."""
import subprocess
import sys

import numpy as np
import pytest

from glag.data.bank import Bank
from glag.data.datasets import load_dataset
from glag.data.longtail import make_long_tail


@pytest.mark.slow
def test_two_processes_write_one_complete_bank(tmp_path):
    out = tmp_path / "bank.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "glag.extract.cli", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--threads", "1",
           "--dump-batch-size", "64", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x2" in done.stderr                                           # both ranks joined one group
    data = make_long_tail(load_dataset("digits"), "exp", 10.0, 10, seed=0)
    with Bank(out) as bank:
        assert bank.config["batch_size"] == 64
        for split in ("train", "val", "test"):
            rows = bank.load(split, ("index", "labels", "features"))
            np.testing.assert_array_equal(rows["index"], getattr(data, split).index)   # all rows, in order
            np.testing.assert_array_equal(rows["labels"], getattr(data, split).labels)
            assert np.isfinite(rows["features"]).all()
        assert bank.metrics["test"]["overall"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.ckpt.pt", "bank.h5", "bank.history.json"]  # rank 0, once
