"""Signals (issue #18): SIGTERM cleans up as Ctrl-C does, and a sweep's loky workers die with their parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from glag.generate.toybank import exp_counts, write_toy_bank
from tests.test_kill_safety import GEN, Started, _store_half_written, as_in_a_terminal, temps


def python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh Python whose Ctrl-C acts as in a terminal."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=as_in_a_terminal)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted")], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_store_leaves_no_temp_and_says_so(tmp_path, sig, code, said):
    """`timeout` and schedulers send SIGTERM, a user Ctrl-C: the store being written is removed, wherever the
    signal lands (HDF5's file callbacks included: an exception there used to crash the process or be dropped)."""
    bank = write_toy_bank(tmp_path / "bank.h5", exp_counts(12, 150, 40), 8, seed=1)
    synthetic = bank.parent / "synthetic"
    run = Started("glag.generate.cli", "--bank", bank, *GEN)
    deadline = time.time() + 90
    while not _store_half_written(synthetic)():
        assert run.proc.poll() is None and time.time() < deadline, "".join(run.lines)
        time.sleep(0.002)
    run.proc.send_signal(sig)
    assert run.proc.wait(timeout=60) == code, "".join(run.lines)
    time.sleep(0.1)                                     # the reader thread takes the last line
    assert f"{said}; outputs were not written" in "".join(run.lines)
    assert temps(synthetic) == [] and not list(synthetic.glob("*.h5"))


def test_sigterm_inside_an_atomic_write_of_a_library_caller_removes_the_temp(tmp_path):
    """From the Python API too (no console script around it): the temp goes, SIGTERM's default comes back."""
    code = textwrap.dedent(f"""
        import os, signal
        from glag.data.atomic import Terminated, atomic_file
        try:
            with atomic_file({str(tmp_path / 'out.bin')!r}) as tmp:
                tmp.write_bytes(bytes(10 ** 6))
                os.kill(os.getpid(), signal.SIGTERM)
        except Terminated:
            print("terminated", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    """)
    out = python(code)
    assert out.stdout.strip() == "terminated True", out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_whose_exception_python_drops_still_stops_the_rename(tmp_path):
    """Raised inside a finalizer, Terminated is printed and dropped by Python; the write is not committed anyway."""
    code = textwrap.dedent(f"""
        import os, signal
        from glag.data.atomic import Terminated, atomic_file

        class Dropper:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                sum(range(1000))                      # the handler runs here, inside the finalizer

        try:
            with atomic_file({str(tmp_path / 'out.bin')!r}) as tmp:
                tmp.write_bytes(bytes(10))
                Dropper()
                print("went on")
        except Terminated:
            print("terminated")
    """)
    out = python(code)
    assert out.stdout.split() == ["went", "on", "terminated"], out.stdout + out.stderr
    assert "Exception ignored" in out.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig, raised", [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")])
def test_a_signal_inside_an_h5py_callback_waits_for_the_writers_next_check(tmp_path, sig, raised):
    """In a function HDF5 calls back (the writer's file object) a SIGTERM or Ctrl-C is recorded, not raised: an exception
    there would leave HDF5 half-way through a write. The next check raises it and removes the temp."""
    code = textwrap.dedent(f"""
        import os, signal
        from glag.data.atomic import Terminated, check_interrupted, defer_interrupts, sigterm_as_interrupt

        @defer_interrupts
        def callback():
            os.kill(os.getpid(), signal.{sig})
            sum(range(1000))
            return "returned"

        with sigterm_as_interrupt():
            print(callback())
            try:
                check_interrupted()
            except KeyboardInterrupt as e:
                print("raised at the check:", type(e).__name__)
    """)
    out = python(code)
    assert out.stdout.splitlines() == ["returned", f"raised at the check: {raised}"], out.stdout + out.stderr


def test_a_signal_inside_a_deferring_library_is_raised_once_its_code_has_returned(tmp_path):
    """Inside h5py's Python code (a library registered by defer_interrupts_in) a Ctrl-C waits: it is sent again
    until it lands outside, and raised there, once."""
    lib = str(tmp_path / "lib")
    code = textwrap.dedent(f"""
        import time
        from glag.data.atomic import defer_interrupts_in, sigterm_as_interrupt
        defer_interrupts_in({lib!r})
        body = "def inside():\\n    import os, signal, time\\n    os.kill(os.getpid(), signal.SIGINT)\\n" \\
               "    time.sleep(0.2)\\n    return 'finished inside'\\n"
        ns = {{}}
        exec(compile(body, {lib!r} + "/lib.py", "exec"), ns)
        with sigterm_as_interrupt():
            try:
                print(ns["inside"]())
                time.sleep(2)
                print("never raised")
            except KeyboardInterrupt:
                print("raised outside")
    """)
    out = python(code)
    assert out.stdout.splitlines() == ["finished inside", "raised outside"], out.stdout + out.stderr


WORKERS = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from joblib import Parallel, delayed
    from glag.parallel import backend

    def task(i, folder):
        Path(folder, f"{i}.pid").write_text(str(os.getpid()))
        try:
            time.sleep(120)
        except KeyboardInterrupt:
            Path(folder, f"{i}.interrupted").write_text("")
            raise

    with backend("loky", jobs=2):
        Parallel(n_jobs=2)(delayed(task)(i, sys.argv[1]) for i in range(2))
""")


def _alive(pid: int) -> bool:
    """The process runs (a zombie nobody reaped yet has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


def test_loky_workers_die_with_a_parent_killed_with_sigkill(tmp_path):
    """kill -9 of a sweep once left its workers running (and writing run folders) for as long as their runs took."""
    parent = subprocess.Popen([sys.executable, "-c", WORKERS, str(tmp_path)])
    pids = []
    try:
        deadline = time.time() + 60
        while len(pids) < 2:
            assert parent.poll() is None and time.time() < deadline
            time.sleep(0.05)
            pids = [int(p.read_text()) for p in tmp_path.glob("*.pid") if p.read_text()]
        parent.kill()
        parent.wait()
        deadline = time.time() + 30
        while any(map(_alive, pids)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, pids)), "workers outlived their parent"
        assert sorted(p.name for p in tmp_path.glob("*.interrupted")) == ["0.interrupted", "1.interrupted"]
    finally:
        for pid in filter(_alive, pids):            # only the workers this test started
            os.kill(pid, signal.SIGKILL)


def test_a_worker_started_after_its_parent_died_exits_at_once():
    code = ("import os; from glag.parallel import die_with_parent; print('started', flush=True); "
            "die_with_parent(os.getppid() + 10 ** 6); print('ran')")
    out = python(code)
    assert out.returncode == 1 and out.stdout.split() == ["started"], out.stderr
