"""Crash safety of rnnkit.training.fit, shown by killing real training processes with SIGKILL.

Each test starts the small real training program of tests/test_distributed.py (a
bidirectional rnnkit.SimpleRecurrentLayer sentiment model on a few hundred IMDB reviews),
has it SIGKILL itself at a chosen point (deterministic, unlike a kill from outside on a
busy machine), then runs the same command again and checks what the second run did.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_distributed import (
    PROGRAM,
    REPO,
    imdb_subset,
    launch,
    load_weights,
    program_env,
    read_trace,
    run_program,
)

pytestmark = pytest.mark.slow
SIGKILLED = -9


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    return imdb_subset(tmp_path_factory.mktemp("imdb"))


def _begun(trace: Path, task: int = 0) -> list[int]:
    return [row["epoch"] for row in read_trace(trace, task) if row["event"] == "epoch_begin"]


def _checkpoints(run: Path) -> list[str]:
    folder = run / "checkpoints"
    return sorted(p.name for p in folder.glob("epoch-*")) if folder.is_dir() else []


def test_kill_mid_epoch_resumes_that_epoch_with_early_stopping_and_lr_state(reviews, tmp_path):
    run = tmp_path / "run"
    # Early stopping on the training loss with mode "max": the loss falls, so no epoch after
    # the first improves and training stops after 1 + patience epochs. ReduceLROnPlateau
    # (min_delta 1.0, patience 1) halves the rate at the end of every epoch from the 2nd.
    common = ["--data", str(reviews), "--output", str(run), "--epochs", "8", "--monitor",
              "loss", "--mode", "max", "--patience", "3", "--lr-drop"]
    first = run_program([*common, "--trace", str(tmp_path / "t1"), "--sigkill-at", "2:3"])
    assert first.returncode == SIGKILLED, first.stderr[-2000:]
    assert _begun(tmp_path / "t1") == [0, 1, 2]
    assert _checkpoints(run) == ["epoch-0001", "epoch-0002"]
    assert not (run / "model.keras").exists()

    second = run_program([*common, "--trace", str(tmp_path / "t2")])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stderr and "after epoch 2 of 8" in second.stderr
    trace = read_trace(tmp_path / "t2")
    # The killed epoch is run again, nothing before it; early stopping's counter came back
    # (wait 1 after epoch 2), so it stops after epoch 4 exactly as an uninterrupted run.
    assert _begun(tmp_path / "t2") == [2, 3]
    # The rate (an optimizer variable) and ReduceLROnPlateau's counters came back: halved
    # after epoch 2 (before the kill) and again after epoch 3 (after the resume).
    lrs = [row["lr"] for row in trace if row["event"] == "epoch_begin"]
    assert lrs == pytest.approx([2.5e-3, 1.25e-3], rel=1e-5)
    result = trace[-1]["result"]
    assert result["epochs_run"] == 4 and len(result["history"]["loss"]) == 4
    assert result["best_epoch"] == 0
    assert json.loads((run / "history.json").read_text()) == result
    assert (run / "model.keras").is_file() and _checkpoints(run) == []


def test_kill_during_checkpoint_save_never_blocks_the_next_train(reviews, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reviews), "--output", str(run), "--epochs", "3"]
    first = run_program([*common, "--trace", str(tmp_path / "t1"), "--sigkill-in-save", "2"])
    assert first.returncode == SIGKILLED, first.stderr[-2000:]
    partial = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-epoch-0002")]
    assert len(partial) == 1 and _checkpoints(run) == ["epoch-0001"]
    with pytest.raises((zipfile.BadZipFile, OSError, ValueError)):  # a cut-short file
        np.load(partial[0] / "variables.npz")["model/00000"]

    second = run_program([*common, "--trace", str(tmp_path / "t2")])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "interrupted" in second.stderr and "after epoch 1 of 3" in second.stderr
    assert _begun(tmp_path / "t2") == [1, 2]
    assert (run / "model.keras").is_file() and not (run / "checkpoints").exists()


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(reviews, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reviews), "--output", str(run), "--epochs", "3"]
    first = run_program([*common, "--trace", str(tmp_path / "t1"), "--sigkill-at", "2:1"])
    assert first.returncode == SIGKILLED, first.stderr[-2000:]
    assert _checkpoints(run) == ["epoch-0001", "epoch-0002"]
    # A storage fault (not a kill: saves are atomic) cut the newest checkpoint short.
    arrays = run / "checkpoints" / "epoch-0002" / "variables.npz"
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 3])

    second = run_program([*common, "--trace", str(tmp_path / "t2")])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "epoch-0002 is unreadable" in second.stderr
    assert "falling back to the previous one" in second.stderr
    assert _begun(tmp_path / "t2") == [1, 2]
    assert (run / "model.keras").is_file()


def test_kill_after_training_before_the_model_is_saved_loses_nothing(reviews, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reviews), "--output", str(run), "--epochs", "2"]
    first = run_program([*common, "--trace", str(tmp_path / "t1"), "--sigkill-before-save"])
    assert first.returncode == SIGKILLED, first.stderr[-2000:]
    assert not (run / "model.keras").exists() and _checkpoints(run) == ["epoch-0001",
                                                                         "epoch-0002"]
    trained = load_weights(tmp_path / "t1")

    second = run_program([*common, "--trace", str(tmp_path / "t2")])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "already finished" in second.stderr
    assert _begun(tmp_path / "t2") == []  # nothing trained again
    restored = load_weights(tmp_path / "t2")
    assert all(np.array_equal(a, b) for a, b in zip(trained, restored, strict=True))
    assert read_trace(tmp_path / "t2")[-1]["result"] == read_trace(tmp_path / "t1")[-1]["result"]
    assert (run / "model.keras").is_file() and not (run / "checkpoints").exists()

    third = run_program([*common, "--trace", str(tmp_path / "t3")])  # a complete run: afresh
    assert third.returncode == 0, third.stderr[-2000:]
    assert _begun(tmp_path / "t3") == [0, 1]


def _start_workers(args: list[str], workers: int, folder: Path) -> list[subprocess.Popen]:
    """Start the program as a multi_worker job by hand, as on a cluster (no launcher)."""
    from rnnkit.distributed import local_tf_configs

    procs = []
    for index, tf_config in enumerate(local_tf_configs(workers)):
        env = {**program_env(), "TF_CONFIG": tf_config}
        with open(folder / f"worker-{index}.log", "w") as log:
            procs.append(subprocess.Popen([*PROGRAM, *args, "--strategy", "multi_worker"],
                                          env=env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=REPO))
    return procs


def test_lost_worker_is_reported_and_the_job_resumes(reviews, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reviews), "--output", str(run), "--epochs", "3"]
    procs = _start_workers([*common, "--trace", str(tmp_path / "t1"), "--kill-task", "1",
                            "--sigkill-at", "1:2"], 2, tmp_path)
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes[1] == SIGKILLED
    chief_log = (tmp_path / "worker-0.log").read_text()
    assert codes[0] == 1, chief_log[-3000:]
    # The survivor names the lost worker and says how to go on.
    assert "WorkerLostError: worker 1 stopped responding" in chief_log
    assert "during epoch 2" in chief_log and "resumes from the last checkpoint" in chief_log
    assert _checkpoints(run) == ["epoch-0001"]

    rc, log = launch([*common, "--trace", str(tmp_path / "t2")], 2, tmp_path / "second.log")
    assert rc == 0, log[-3000:]
    assert "after epoch 1 of 3" in log
    for task in (0, 1):
        assert _begun(tmp_path / "t2", task) == [1, 2]
    w0, w1 = load_weights(tmp_path / "t2", 0), load_weights(tmp_path / "t2", 1)
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1, strict=True))
    assert (run / "model.keras").is_file() and not (run / "checkpoints").exists()


def test_mixed_float16_run_resumes_with_its_loss_scale(reviews, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reviews), "--output", str(run), "--epochs", "2",
              "--mixed-precision", "mixed_float16"]
    first = run_program([*common, "--trace", str(tmp_path / "t1"), "--sigkill-at", "1:3"])
    assert first.returncode == SIGKILLED, first.stderr[-2000:]
    # The LossScaleOptimizer's own variables (scale, step counter) are in the checkpoint.
    state = json.loads((run / "checkpoints" / "epoch-0001" / "state.json").read_text())
    assert state["fingerprint"]["optimizer"] == "LossScaleOptimizer"
    second = run_program([*common, "--trace", str(tmp_path / "t2")])
    assert second.returncode == 0, second.stderr[-2000:]
    assert _begun(tmp_path / "t2") == [1]
    loss = read_trace(tmp_path / "t2")[-1]["result"]["history"]["loss"]
    assert len(loss) == 2 and all(np.isfinite(loss))
    assert (run / "model.keras").is_file()
