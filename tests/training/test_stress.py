"""Hostile runs, many times: two trainings into one folder at random offsets, and kill -9 at random moments
of stage 0 and of the checkpoints. Every folder must stay loadable and every failure must be one clear line.

Slow (minutes per ten rounds): ``MDM_STRESS_ROUNDS=100 pytest -m slow tests/training/test_stress.py``.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from mdm.checkpoint import checkpoint_folder, has_checkpoint, load_checkpoint

ROUNDS = int(os.environ.get("MDM_STRESS_ROUNDS", "100"))
RUN = ["--config", "tiny", "--threads", "1", "--no-progress", "data.vq_steps=50", "data.train_size=256",
       "train.steps=12", "train.checkpoint_every=4", "train.batch_size=8"]
CLEAR = ("is in use by", "already holds a run")  # the two refusals a second writer may get


def _train(folder, *extra):
    return subprocess.Popen([sys.executable, "-m", "mdm", "train", "--out", str(folder), *RUN, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _loadable(folder) -> bool:
    return has_checkpoint(folder) and load_checkpoint(checkpoint_folder(folder)).step > 0


@pytest.mark.slow
def test_two_trainings_into_one_folder_never_corrupt_it(tmp_path):
    rng = random.Random(0)
    outcomes = {"both ok": 0, "one refused": 0}
    for i in range(ROUNDS):
        folder = tmp_path / f"conc{i}"
        first = _train(folder)
        time.sleep(rng.uniform(0.0, 3.0))
        second = _train(folder)
        results = [(p.wait(), p.communicate()[1]) for p in (first, second)]
        for code, err in results:
            assert "Traceback" not in err, err
            assert code == 0 or (code == 2 and any(c in err for c in CLEAR)), (code, err)
        outcomes["both ok" if all(c == 0 for c, _ in results) else "one refused"] += 1
        assert _loadable(folder)
    print(f"{ROUNDS} concurrent pairs: {outcomes}")


@pytest.mark.slow
def test_kill_9_during_stage_0_or_a_checkpoint_leaves_a_folder_the_next_run_continues(tmp_path):
    rng = random.Random(1)
    kinds = {"killed before a checkpoint": 0, "killed after one": 0, "finished before the kill": 0}
    for i in range(ROUNDS):
        folder = tmp_path / f"kill{i}"
        proc = _train(folder)
        time.sleep(rng.uniform(2.0, 14.0))  # from the import of torch through stage 0 to the last checkpoints
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kinds["killed after one" if has_checkpoint(folder) else "killed before a checkpoint"] += 1
        else:
            kinds["finished before the kill"] += 1
        again = _train(folder, *(["--resume"] if has_checkpoint(folder) else []))
        code, err = again.wait(), again.communicate()[1]
        assert code == 0 and "Traceback" not in err, (code, err)
        assert _loadable(folder)
    print(f"{ROUNDS} kills: {kinds}")
