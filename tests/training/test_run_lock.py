"""One writer per run folder: a second training is refused naming the holder, a dead holder's lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from mdm.cli import main
from mdm.config import load_config
from mdm.training.run import train_run
from mdm.training.run_lock import LOCK_FILE, RunFolderLockedError, acquire, release

TINY = ["train.log_every=1", "train.batch_size=4", "data.train_size=48", "data.vq_steps=3",
        "data.codebook_size=32", "data.vocab_size=64", "train.steps=2"]
QUIET = dict(progress=False, log=lambda _: None)

HOLD = """
import sys, time
from pathlib import Path
from mdm.training.run_lock import acquire
acquire(Path(sys.argv[1]), "test holder")
print("held", flush=True)
time.sleep(120)
"""


def _holder(folder):
    """Another process that holds ``folder``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = _holder(folder)
    try:
        with pytest.raises(RunFolderLockedError, match=f"process {proc.pid} on host {socket.gethostname()}"):
            train_run(load_config("tiny", TINY), folder, **QUIET)
        assert not (folder / "checkpoint").exists() and not (folder / "vq").exists()  # refused before any work
    finally:
        proc.kill()  # kill -9: the kernel drops the flock, the lock file stays behind, stale
        proc.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == proc.pid
    result = train_run(load_config("tiny", TINY), folder, **QUIET)
    assert result.trainer.step == 2
    assert not (folder / LOCK_FILE).exists()  # released on exit


def test_resume_while_another_process_trains_is_refused(tmp_path):
    folder = tmp_path / "run"
    train_run(load_config("tiny", TINY), folder, **QUIET)
    fd = acquire(folder, "another training")  # flock conflicts between two open files of one process too
    try:
        with pytest.raises(RunFolderLockedError, match=f"process {os.getpid()}"):
            train_run(load_config("tiny", TINY + ["train.steps=3"]), folder, resume=True, **QUIET)
    finally:
        release(folder, fd)
    assert train_run(load_config("tiny", TINY + ["train.steps=3"]), folder, resume=True, **QUIET).trainer.step == 3


def test_the_cli_refuses_a_held_folder_with_exit_code_2_and_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    fd = acquire(folder)
    try:
        code = main(["train", "--config", "tiny", "--out", str(folder), "--no-progress", *TINY])
    finally:
        release(folder, fd)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"is in use by process {os.getpid()}" in err and "Traceback" not in err


def test_the_lock_is_released_when_the_run_fails(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mdm.training.run.prepare_data", broken)
    folder = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        train_run(load_config("tiny", TINY), folder, **QUIET)
    assert folder.is_dir() and not (folder / LOCK_FILE).exists()
    release(folder, acquire(folder))  # and free
