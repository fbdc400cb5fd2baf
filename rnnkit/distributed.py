"""tf.distribute for every app: strategies by name, TF_CONFIG, data sharding, mixed precision
and a launcher that runs N local workers.

The pieces the command line uses:

* :func:`add_training_arguments` adds ``--strategy``, ``--mixed-precision`` and ``--workers``
  to a ``train`` parser; :func:`strategy_from_args` turns them into a strategy (and sets
  the Keras mixed-precision policy).
* :func:`get_strategy` returns one strategy per name for the whole process.
  ``multi_worker`` (``MultiWorkerMirroredStrategy``) reads the standard ``TF_CONFIG``
  environment variable and, as TensorFlow requires, must be created before any other
  TensorFlow work in the process (data loading included).
* :func:`is_chief`: only the chief writes history, checkpoints, models and reports.
* :func:`distribute_dataset` applies an explicit ``tf.data`` sharding policy;
  :func:`per_replica_batch_size` derives the per-replica batch from the global one.
* :func:`launch_local_workers` re-runs a command line as N workers on 127.0.0.1.

docs/distributed.md explains how to run the same command on a real cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "MIXED_PRECISION",
    "SHARD_POLICIES",
    "STRATEGIES",
    "WorkerLostError",
    "add_training_arguments",
    "distribute_dataset",
    "get_strategy",
    "is_chief",
    "launch_local_workers",
    "local_tf_configs",
    "per_replica_batch_size",
    "read_tf_config",
    "set_mixed_precision",
    "strategy_from_args",
    "worker_count",
]

#: ``--strategy`` values. A parameter-server strategy is not offered: it needs a
#: ``ClusterCoordinator`` loop of its own (see docs/distributed.md).
STRATEGIES = ("default", "mirrored", "multi_worker")
#: ``--mixed-precision`` values (Keras dtype policies; ``off`` keeps float32).
MIXED_PRECISION = ("off", "mixed_float16", "mixed_bfloat16")
#: ``tf.data`` auto-shard policies by name.
SHARD_POLICIES = {
    "data": tf.data.experimental.AutoShardPolicy.DATA,
    "file": tf.data.experimental.AutoShardPolicy.FILE,
    "auto": tf.data.experimental.AutoShardPolicy.AUTO,
    "off": tf.data.experimental.AutoShardPolicy.OFF,
}

# One strategy per name and process: MultiWorkerMirroredStrategy can be created only once
# (it configures the collective ops of the process), and the app code asks for the
# strategy after the command line already created it.
_STRATEGIES: dict[str, tf.distribute.Strategy] = {}
_ACTIVE: tf.distribute.Strategy | None = None


class WorkerLostError(RuntimeError):
    """Another worker of a ``multi_worker`` job stopped (or cannot be reached)."""


def read_tf_config(environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Parse and check ``TF_CONFIG``; return None when it is not set.

    Args:
        environ: the environment to read (default ``os.environ``).

    Raises:
        ValueError: TF_CONFIG is not JSON, or lacks ``cluster`` / ``task``, or its task
            is not in its cluster.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw[:200]!r}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        # A wrong environment value, not a wrong argument type: ValueError.
        raise ValueError('TF_CONFIG needs a "cluster" object, e.g. '  # noqa: TRY004
                         '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                         '"task": {"type": "worker", "index": 0}}')
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG needs a "task" object with "type" and "index", e.g. '
                         '"task": {"type": "worker", "index": 0}')
    hosts = config["cluster"].get(task["type"])
    if not isinstance(hosts, list) or not 0 <= int(task["index"]) < len(hosts):
        raise ValueError(f"TF_CONFIG task {task['type']}:{task['index']} is not in its cluster "
                         f"{config['cluster']}")
    return config


def worker_count(environ: dict[str, str] | None = None) -> int:
    """Number of training processes described by ``TF_CONFIG`` (chief + workers); 1 without it.

    Args:
        environ: the environment to read (default ``os.environ``).
    """
    config = read_tf_config(environ)
    if config is None:
        return 1
    cluster = config["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _chief_from_config(config: dict[str, Any] | None) -> bool:
    if config is None:
        return True
    task_type, index = config["task"]["type"], int(config["task"]["index"])
    if task_type == "chief":
        return True
    # Without a "chief" job, worker 0 is the chief (TensorFlow's own convention).
    return task_type == "worker" and index == 0 and "chief" not in config["cluster"]


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's files (always True outside ``multi_worker``).

    Args:
        strategy: the strategy in use (default: the last one :func:`get_strategy` created,
            else the one in scope).
    """
    strategy = strategy or _ACTIVE or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def _multi_worker() -> tf.distribute.Strategy:
    config = read_tf_config()
    if config is None:
        raise ValueError(
            "--strategy multi_worker needs the TF_CONFIG environment variable (the cluster and "
            "this process's task; see docs/distributed.md), or use --workers N to start N "
            "local workers")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        if "program startup" in str(err):
            raise RuntimeError(
                "the multi_worker strategy must be created before any other TensorFlow work "
                "in the process: call rnnkit.distributed.strategy_from_args(args) (or "
                "get_strategy('multi_worker')) first, before loading data or building models"
            ) from err
        raise


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Return the process's ``tf.distribute`` strategy of this name (created once).

    Args:
        name: ``"default"`` (one device, the usual no-op strategy), ``"mirrored"``
            (``MirroredStrategy`` over every visible GPU, or the CPU when there is none) or
            ``"multi_worker"`` (``MultiWorkerMirroredStrategy`` over the processes that
            ``TF_CONFIG`` lists; create it before any other TensorFlow work).

    Raises:
        ValueError: for any other name, or ``multi_worker`` without ``TF_CONFIG``.
    """
    global _ACTIVE
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name not in _STRATEGIES:
        strategy = tf.distribute.MirroredStrategy() if name == "mirrored" else _multi_worker()
        _STRATEGIES[name] = strategy
    else:
        strategy = _STRATEGIES[name]
    _ACTIVE = strategy
    return strategy


def set_mixed_precision(policy: str | None) -> str:
    """Set Keras' global dtype policy; call it before building the model.

    Args:
        policy: ``"off"``/None (float32), ``"mixed_float16"`` or ``"mixed_bfloat16"``.
            Under ``mixed_float16`` Keras' ``compile`` wraps the optimizer in a
            ``LossScaleOptimizer``.

    Returns:
        The policy name now in force.
    """
    name = "float32" if policy in (None, "off") else policy
    if name != "float32" and name not in MIXED_PRECISION:
        raise ValueError(f"unknown mixed precision {policy!r}: expected one of "
                         f"{', '.join(MIXED_PRECISION)}")
    keras.mixed_precision.set_global_policy(name)
    return name


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--strategy``, ``--mixed-precision`` and ``--workers`` to a ``train`` parser.

    Args:
        parser: the verb's parser.
    """
    group = parser.add_argument_group("distribution")
    group.add_argument("--strategy", choices=STRATEGIES, default=None,
                       help="tf.distribute strategy; multi_worker reads TF_CONFIG "
                            "[default: default]")
    group.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=None,
                       help="Keras mixed-precision policy [default: off]")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="start N local workers on 127.0.0.1 (multi_worker, each with its "
                            "TF_CONFIG) running this same command; the chief writes the run")


def strategy_from_args(args: argparse.Namespace) -> tf.distribute.Strategy:
    """Set the mixed-precision policy and return the strategy ``args`` ask for.

    Call it first in ``train``, before any other TensorFlow work: ``multi_worker`` needs that.

    Args:
        args: parsed flags with ``strategy`` and, optionally, ``mixed_precision``.
    """
    set_mixed_precision(getattr(args, "mixed_precision", None))
    return get_strategy(getattr(args, "strategy", None) or "default")


def per_replica_batch_size(global_batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """The batch each replica computes for a global batch (``--batch-size`` is global).

    Args:
        global_batch_size: the batch size over all replicas of all workers.
        strategy: the strategy in use.

    Raises:
        ValueError: the global batch does not split evenly over the replicas (an uneven
            split would weight the examples of the smaller shards more).
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size < 1:
        raise ValueError(f"the batch size must be positive, not {global_batch_size}")
    if global_batch_size % replicas:
        raise ValueError(f"global batch size {global_batch_size} does not split evenly over "
                         f"{replicas} replicas: use a multiple of {replicas}")
    return global_batch_size // replicas


def distribute_dataset(
    ds: tf.data.Dataset, strategy: tf.distribute.Strategy, policy: str = "data"
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """Distribute a dataset batched by the GLOBAL batch size over the strategy's replicas.

    With ``policy="data"`` (the default, and what every app uses: their data is in memory
    or in TFDS records read by one pipeline) every worker runs the same pipeline and each
    global batch is split into per-replica slices: all workers take the same number of
    steps, and a step computes the same gradient as one process on the whole global batch.
    ``"file"`` shards input files between workers (for pipelines that read many files),
    ``"off"`` leaves sharding to the pipeline itself.

    Args:
        ds: a dataset of global batches.
        strategy: the strategy in use; the default strategy returns ``ds`` unchanged.
        policy: one of :data:`SHARD_POLICIES`.
    """
    if policy not in SHARD_POLICIES:
        raise ValueError(f"unknown shard policy {policy!r}: expected one of "
                         f"{', '.join(SHARD_POLICIES)}")
    if _is_default(strategy):
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = SHARD_POLICIES[policy]
    return strategy.experimental_distribute_dataset(ds.with_options(options))


def _is_default(strategy: tf.distribute.Strategy) -> bool:
    # TensorFlow's no-op strategy (what tf.distribute.get_strategy() returns outside scopes)
    # has no public type.
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


# --------------------------------------------------------------------- local launcher


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def local_tf_configs(workers: int, ports: Sequence[int] | None = None) -> list[str]:
    """``TF_CONFIG`` values for ``workers`` processes on 127.0.0.1 (worker 0 is the chief).

    Args:
        workers: how many processes.
        ports: their ports (default: free ports picked now).
    """
    ports = list(ports) if ports is not None else _free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def _worker_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--workers`` and with ``--strategy multi_worker``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--strategy"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--strategy=")):
            continue
        out.append(arg)
    return [*out, "--strategy", "multi_worker"]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch_local_workers(
    argv: Sequence[str],
    workers: int,
    *,
    program: Sequence[str] | None = None,
    poll_seconds: float = 0.2,
) -> int:
    """Run the same command line as ``workers`` local ``multi_worker`` processes.

    Each process gets a ``TF_CONFIG`` naming every worker on a free 127.0.0.1 port; worker 0
    is the chief, whose output is streamed here. The others' output goes to a temporary
    log that is shown only when one of them fails. When any worker dies the others are
    stopped and the return code is non-zero, with a message naming the worker; running the
    same command again resumes from the chief's last checkpoint.

    Args:
        argv: the command line after the program name (e.g. ``["sentiment", "train",
            "--quick", "--workers", "2"]``); ``--workers`` is removed and
            ``--strategy multi_worker`` set.
        workers: how many processes (>= 1).
        program: the program to run (default ``[sys.executable, "-m", "rnnkit.cli"]``).
        poll_seconds: how often the processes are checked.

    Returns:
        0 when every worker exited 0, else 1.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    program = list(program) if program is not None else [sys.executable, "-m", "rnnkit.cli"]
    command = [*program, *_worker_argv(argv)]
    logs = Path(tempfile.mkdtemp(prefix="rnnkit-workers-"))
    procs: list[subprocess.Popen] = []
    handles = []
    print(f"starting {workers} local workers on 127.0.0.1: {' '.join(command[len(program):])}",
          flush=True)
    try:
        for index, tf_config in enumerate(local_tf_configs(workers)):
            env = {**os.environ, "TF_CONFIG": tf_config}
            if index == 0:
                out = None  # the chief's output is the run's output
            else:
                # Closed in the finally below, after the process ends.
                out = open(logs / f"worker-{index}.log", "wb")  # noqa: SIM115
                handles.append(out)
            procs.append(subprocess.Popen(command, env=env, stdout=out,
                                          stderr=subprocess.STDOUT if out else None))
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                role = "the chief (worker 0)" if index == 0 else f"worker {index}"
                print(f"error: {role} (pid {procs[index].pid}) {_describe_exit(code)}; "
                      f"stopping the other workers. Run the same command again to resume "
                      f"from the last checkpoint.", file=sys.stderr, flush=True)
                if index:
                    tail = _tail(logs / f"worker-{index}.log")
                    if tail:
                        print(f"--- last lines of worker {index}'s output ---\n{tail}",
                              file=sys.stderr, flush=True)
                return 1
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        print("interrupted: stopping the workers", file=sys.stderr, flush=True)
        return 130
    finally:
        _stop(procs)
        for handle in handles:
            handle.close()
        shutil.rmtree(logs, ignore_errors=True)


def _stop(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """Terminate the processes still running, then kill those that do not stop."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace
    for p in alive:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
