"""rnnkit.distributed and rnnkit.training.fit under tf.distribute strategies.

The training tests run real processes: this file is also the training program they start
(``python tests/test_distributed.py --data ... --output ...``): a small sentiment model (the
app's own length-bucketed pipeline and classifier, with rnnkit.SimpleRecurrentLayer) on a
few hundred real IMDB reviews, trained by ``rnnkit.training.fit`` under the strategy its
flags ask for (``--strategy multi_worker`` reads TF_CONFIG, as on a real cluster).
tests/test_crash_safety.py starts the same program and kills it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAM = [sys.executable, str(Path(__file__).resolve())]
GLOBAL_BATCH = 16
TRAIN_REVIEWS, VAL_REVIEWS = 320, 96


# ------------------------------------------------------------------------ the program


def _worker_total() -> int:
    from rnnkit.distributed import worker_count

    return worker_count()


def _task_index() -> int:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return int(config.get("task", {}).get("index", 0))


def program(argv: list[str] | None = None) -> int:
    """Train the small sentiment model; see the module docstring. Returns the exit code."""
    parser = argparse.ArgumentParser(description="rnnkit distributed/crash test program")
    parser.add_argument("--data", type=Path, required=True, help="reviews JSON (imdb_subset)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--trace", type=Path, required=True,
                        help="folder for this test's per-process record (not a run file)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=GLOBAL_BATCH)
    parser.add_argument("--monitor", default="val_loss")
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr-drop", action="store_true",
                        help="ReduceLROnPlateau that halves the rate every epoch after the 1st")
    parser.add_argument("--cpu-devices", type=int, default=1,
                        help="logical CPU devices (for the mirrored strategy)")
    parser.add_argument("--sigkill-at", metavar="EPOCH:BATCH",
                        help="SIGKILL this process after that batch (0-based)")
    parser.add_argument("--sigkill-in-save", type=int, metavar="EPOCH",
                        help="SIGKILL this process half-way through writing that epoch's "
                             "checkpoint (1-based, as in the folder name)")
    parser.add_argument("--sigkill-before-save", action="store_true",
                        help="SIGKILL this process after fit, before the model is saved")
    parser.add_argument("--kill-task", type=int, default=0,
                        help="which worker of a multi_worker job kills itself")
    from rnnkit.distributed import add_training_arguments

    add_training_arguments(parser)
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    from rnnkit import training
    from rnnkit.distributed import strategy_from_args

    strategy = strategy_from_args(args)  # first: multi_worker must precede other TF work
    import keras
    from apps.sentiment.model import build_classifier, make_vectorizer
    from apps.sentiment.train import bucketed, token_dataset

    task = _task_index()
    killer = task == args.kill_task
    args.trace.mkdir(parents=True, exist_ok=True)
    trace = args.trace / f"task-{task}.jsonl"
    training.seed_everything(7)
    reviews = json.loads(args.data.read_text())

    def pairs(name):
        return tf.data.Dataset.from_tensor_slices(
            (reviews[name]["texts"], np.asarray(reviews[name]["labels"], "int64")))

    vectorizer = make_vectorizer(2000)
    vectorizer.adapt(pairs("train").map(lambda t, y: t).batch(128))
    # Batches of an even size only: each splits exactly over two replicas, so a step
    # computes the same gradient distributed or not (the parity test's premise).
    even = lambda ds: ds.filter(lambda x, y: tf.shape(x)[0] % 2 == 0)
    train_ds = even(bucketed(token_dataset(pairs("train"), vectorizer, 96), args.batch_size,
                             96, shuffle_seed=None))
    val_ds = even(bucketed(token_dataset(pairs("val"), vectorizer, 96), args.batch_size, 96,
                           shuffle_seed=None))
    with strategy.scope():
        model = build_classifier(vectorizer.vocabulary_size(), 16, 16, 0.0, 0.0)
        model.compile(keras.optimizers.Adam(5e-3),
                      keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)])

    def record(**row):
        with open(trace, "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_batch_end(batch, logs):
        if killer and args.sigkill_at and [epoch_now[0], batch] == [
                int(v) for v in args.sigkill_at.split(":")]:
            os.kill(os.getpid(), signal.SIGKILL)

    epoch_now = [0]

    def on_epoch_begin(epoch, logs):
        epoch_now[0] = epoch
        record(event="epoch_begin", epoch=epoch, time=time.time(),
               lr=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))

    epoch_seconds = []

    def on_epoch_end(epoch, logs):
        begun = [r for r in map(json.loads, trace.read_text().splitlines())
                 if r["event"] == "epoch_begin"][-1]["time"]
        epoch_seconds.append(time.time() - begun)  # training and validation of the epoch

    callbacks = [keras.callbacks.LambdaCallback(on_epoch_begin=on_epoch_begin,
                                                on_epoch_end=on_epoch_end,
                                                on_train_batch_end=on_batch_end)]
    if args.lr_drop:
        # min_delta 1.0: no epoch counts as an improvement after the first, so with
        # patience 1 the rate halves at the end of every epoch from the second on.
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=1, min_delta=1.0, min_lr=1e-6))
    if args.sigkill_in_save is not None and killer:
        _kill_during_save(training, args.sigkill_in_save)

    started = time.time()
    result = training.fit(model, train_ds, val_ds, output_dir=args.output, epochs=args.epochs,
                          monitor=args.monitor, mode=args.mode, patience=args.patience,
                          extra_callbacks=callbacks, verbose=2)
    seconds = time.time() - started
    weights = model.get_weights()
    np.savez(args.trace / f"weights-{task}.npz", *weights)
    # Throughput per worker: the examples this worker computed (its share of every global
    # batch) per second, over the epochs after the first (which traces the functions).
    examples = int(train_ds.reduce(0, lambda n, batch: n + tf.shape(batch[0])[0]))
    share = examples / max(1, _worker_total())
    steady = epoch_seconds[1:]
    record(event="done", result=result, seconds=seconds, chief=training.is_chief(),
           replicas=strategy.num_replicas_in_sync, train_examples=examples,
           epoch_seconds=epoch_seconds,
           examples_per_second_per_worker=(share * len(steady) / sum(steady)) if steady
           else None)
    if args.sigkill_before_save and killer:
        os.kill(os.getpid(), signal.SIGKILL)
    training.save_model(model, args.output / "model.keras")
    return 0


def _kill_during_save(training, epoch: int) -> None:
    """Make the checkpoint save of ``epoch`` write half its arrays file, then SIGKILL."""
    import io

    real_savez = training.np.savez
    calls = [0]

    class _NumpyProxy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def savez(file, **arrays):
            calls[0] += 1
            if calls[0] < epoch:
                return real_savez(file, **arrays)
            buffer = io.BytesIO()
            real_savez(buffer, **arrays)
            data = buffer.getvalue()
            file.write(data[: len(data) // 2])
            file.flush()
            os.fsync(file.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

    training.np = _NumpyProxy()


# ------------------------------------------------------------------------ test helpers


def imdb_subset(folder: Path, train: int = TRAIN_REVIEWS, val: int = VAL_REVIEWS) -> Path:
    """Write real IMDB reviews (balanced, first in file order) to ``<folder>/reviews.json``."""
    path = folder / "reviews.json"
    if path.exists():
        return path
    from apps.sentiment.data import fetch_imdb_csv, read_imdb_csv

    texts, labels = read_imdb_csv(fetch_imdb_csv())
    chosen = {0: [], 1: []}
    for text, label in zip(texts, labels.tolist(), strict=True):
        if len(chosen[label]) < (train + val) // 2:
            chosen[label].append(text)
    rows = [(t, y) for y in (0, 1) for t in chosen[y]]
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    split = {"train": rows[:train], "val": rows[train:]}
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: {"texts": [t for t, _ in part],
                                       "labels": [y for _, y in part]}
                                for name, part in split.items()}))
    return path


def program_env() -> dict[str, str]:
    """Environment of the started programs: repository importable, TF logs quiet."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("TF_CONFIG", None)
    return env


def run_program(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the program once (one process, no TF_CONFIG)."""
    return subprocess.run([*PROGRAM, *args], env=program_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


def read_trace(folder: Path, task: int = 0) -> list[dict]:
    """The records a program process wrote (``epoch_begin`` rows, then ``done``)."""
    path = folder / f"task-{task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def load_weights(folder: Path, task: int = 0) -> list[np.ndarray]:
    with np.load(folder / f"weights-{task}.npz") as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def launch(args: list[str], workers: int, log: Path, timeout: float = 300) -> tuple[int, str]:
    """Run the program as ``workers`` local workers through the launcher; (code, output)."""
    code = (
        "import sys; from rnnkit.distributed import launch_local_workers; "
        f"sys.exit(launch_local_workers(sys.argv[1:], {workers}, program={PROGRAM!r}))"
    )
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-c", code, *args, "--workers", str(workers)],
                              env=program_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, cwd=REPO, check=False)
    return proc.returncode, log.read_text()


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    return imdb_subset(tmp_path_factory.mktemp("imdb"))


# ------------------------------------------------------------------------ fast tests


def test_tf_config_parsing_and_chief():
    from rnnkit import distributed as d

    assert d.read_tf_config({}) is None and d.worker_count({}) == 1
    configs = [json.loads(c) for c in d.local_tf_configs(3, ports=[1111, 2222, 3333])]
    assert configs[2]["cluster"]["worker"] == ["127.0.0.1:1111", "127.0.0.1:2222",
                                                "127.0.0.1:3333"]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    env = {"TF_CONFIG": json.dumps(configs[1])}
    assert d.read_tf_config(env) == configs[1] and d.worker_count(env) == 3
    assert d._chief_from_config(configs[0]) and not d._chief_from_config(configs[1])
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                  "task": {"type": "worker", "index": 0}}
    assert not d._chief_from_config(with_chief) and d.worker_count(
        {"TF_CONFIG": json.dumps(with_chief)}) == 2
    for bad, message in [("{", "not valid JSON"), ('{"task": {}}', "needs a \"cluster\" object"),
                         ('{"cluster": {"worker": ["a:1"]}}', '"task"'),
                         (('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                           '"index": 1}}'), "not in its cluster")]:
        with pytest.raises(ValueError, match=message):
            d.read_tf_config({"TF_CONFIG": bad})


def test_strategy_arguments_and_batch_sizes(monkeypatch):
    import tensorflow as tf

    from rnnkit import distributed as d

    parser = argparse.ArgumentParser()
    d.add_training_arguments(parser)
    args = parser.parse_args(["--strategy", "mirrored", "--mixed-precision", "mixed_bfloat16"])
    assert (args.strategy, args.mixed_precision, args.workers) == ("mirrored", "mixed_bfloat16",
                                                                   None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--strategy", "tpu"])
    import keras

    try:
        strategy = d.strategy_from_args(args)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
    finally:
        d.set_mixed_precision("off")
    assert keras.mixed_precision.global_policy().name == "float32"
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        d.get_strategy("multi_worker")
    with pytest.raises(ValueError, match="unknown strategy"):
        d.get_strategy("parameter_server")
    default = tf.distribute.get_strategy()
    assert d.per_replica_batch_size(64, default) == 64
    assert d.per_replica_batch_size(64, strategy) == 64 // strategy.num_replicas_in_sync
    with pytest.raises(ValueError, match="positive"):
        d.per_replica_batch_size(0, default)
    ds = tf.data.Dataset.range(4).batch(2)
    assert d.distribute_dataset(ds, default) is ds
    with pytest.raises(ValueError, match="unknown shard policy"):
        d.distribute_dataset(ds, strategy, "rows")
    assert d._worker_argv(["sentiment", "train", "--workers", "2", "--strategy=mirrored",
                           "--quick"]) == ["sentiment", "train", "--quick", "--strategy",
                                           "multi_worker"]


def test_launcher_names_the_worker_that_died(tmp_path, capfd):
    from rnnkit.distributed import launch_local_workers

    # Worker 1 dies by SIGKILL after worker 0 (the chief) printed its line; the chief
    # would otherwise run for a minute, so the launcher must stop it.
    code = ("import json, os, signal, sys, time\n"
            "task = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
            "print('task', task, 'args', sys.argv[1:], flush=True)\n"
            "if task == 1:\n    time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)\n"
            "time.sleep(60)\n")
    started = time.monotonic()
    rc = launch_local_workers(["app", "train", "--workers", "2"], 2,
                              program=[sys.executable, "-c", code])
    out, err = capfd.readouterr()
    assert rc == 1
    assert "task 0 args ['app', 'train', '--strategy', 'multi_worker']" in out
    assert "worker 1" in err and "SIGKILL" in err and "resume" in err
    assert time.monotonic() - started < 50  # the chief was stopped, not waited for
    ok = launch_local_workers(["x"], 2, program=[sys.executable, "-c", "print('ok')"])
    assert ok == 0
    with pytest.raises(ValueError, match="at least 1"):
        launch_local_workers(["x"], 0)


def test_lost_worker_message_names_the_worker():
    from rnnkit.training import _lost_workers

    text = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/"
            "device:CPU:0}} Collective ops is aborted by: Error reported from /job:worker/task:1:"
            " The following tasks are unhealthy (stopped sending heartbeats):\n"
            "/job:worker/replica:0/task:1\n/job:worker/replica:0/task:3\nThe tasks have crashed.")
    assert _lost_workers(text).startswith("worker 1, worker 3 stopped responding")
    assert _lost_workers("Socket closed") == "lost contact with another worker"


def test_mixed_float16_layer_matches_keras_simple_rnn():
    """The layer under ``mixed_float16`` against keras.layers.SimpleRNN with the same weights."""
    import keras

    import rnnkit
    from rnnkit.distributed import set_mixed_precision

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 30, 12)).astype("float32")
    mask = np.ones((8, 30), bool)
    mask[:3, 20:] = False
    try:
        set_mixed_precision("mixed_float16")
        ours = rnnkit.SimpleRecurrentLayer(24, return_sequences=True)
        ref = keras.layers.SimpleRNN(24, return_sequences=True)
        ours.build((None, 30, 12))
        ref.build((None, 30, 12))
        ref.set_weights(ours.get_weights())
        assert ours.compute_dtype == "float16" and ours.variable_dtype == "float32"
        out, want = ours(x, mask=mask), ref(x, mask=mask)
        assert out.dtype == want.dtype == "float16"
        out, want = np.asarray(out, "float32"), np.asarray(want, "float32")
        # float16 keeps ~3 decimal digits; over 30 steps of tanh the two differ by rounding
        assert np.max(np.abs(out - want)) < 2e-2
        assert np.mean(np.abs(out - want)) < 2e-3
        # and both are close to the float32 computation
        set_mixed_precision("off")
        exact = keras.layers.SimpleRNN(24, return_sequences=True)
        exact.build((None, 30, 12))
        exact.set_weights(ours.get_weights())
        assert np.max(np.abs(out - np.asarray(exact(x, mask=mask)))) < 2e-2
    finally:
        set_mixed_precision("off")


# ------------------------------------------------------------------------ training tests


@pytest.mark.slow
def test_two_workers_match_one_process(reviews, tmp_path):
    """Two local multi_worker processes: both exit 0 with identical weights, the loss falls,
    only the chief writes, and the result matches one process on the same global batch."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    common = ["--data", str(reviews), "--epochs", "3"]
    one = run_program([*common, "--output", str(single / "run"), "--trace", str(single)])
    assert one.returncode == 0, one.stderr[-3000:]
    rc, log = launch([*common, "--output", str(multi / "run"), "--trace", str(multi)], 2,
                     tmp_path / "launch.log")
    assert rc == 0, log[-3000:]
    done = [read_trace(multi, task)[-1] for task in (0, 1)]
    assert [d["chief"] for d in done] == [True, False]
    assert [d["replicas"] for d in done] == [2, 2]
    w0, w1 = load_weights(multi, 0), load_weights(multi, 1)
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1, strict=True))
    history = done[0]["result"]["history"]
    assert history["loss"][-1] < history["loss"][0] - 0.05, history["loss"]
    # Same global batches, split in halves: the same gradients up to float summation order.
    # After the first epoch (19 steps) the two runs agree to 1e-6 (measured); Adam then
    # amplifies the rounding differences (its steps normalise small gradients), to about
    # 4e-3 in the loss after three epochs (measured), hence the looser bound there.
    reference = read_trace(single)[-1]["result"]["history"]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert abs(history[key][0] - reference[key][0]) < 1e-4, (key, history, reference)
    for key in ("loss", "val_loss"):
        assert np.allclose(history[key], reference[key], atol=1e-2), (key, history, reference)
    # Only the chief wrote the run: one TensorBoard writer per folder, the model, no extras.
    run = multi / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.weights.h5", "history.json",
                                                     "model.keras", "tensorboard"]
    for kind in ("train", "validation"):
        assert len(list((run / "tensorboard" / kind).iterdir())) == 1
    assert json.loads((run / "history.json").read_text())["epochs_run"] == 3


@pytest.mark.slow
def test_mirrored_two_cpus_with_bfloat16(reviews, tmp_path):
    """MirroredStrategy over two logical CPU devices with mixed_bfloat16 trains the layer."""
    out = run_program(["--data", str(reviews), "--epochs", "2", "--output", str(tmp_path / "r"),
                       "--trace", str(tmp_path), "--strategy", "mirrored", "--cpu-devices", "2",
                       "--mixed-precision", "mixed_bfloat16"])
    assert out.returncode == 0, out.stderr[-3000:]
    done = read_trace(tmp_path)[-1]
    assert done["replicas"] == 2
    loss = done["result"]["history"]["loss"]
    assert loss[-1] < loss[0] and all(np.isfinite(loss))
    assert (tmp_path / "r" / "model.keras").is_file()


if __name__ == "__main__":
    if sys.argv[1:2] == ["subset"]:  # python tests/test_distributed.py subset DIR TRAIN VAL
        print(imdb_subset(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    sys.exit(program())
