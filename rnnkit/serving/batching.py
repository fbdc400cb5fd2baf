"""Server-side request batching, as TF Serving's ``--enable_batching``.

Concurrent requests to the same model version and signature whose inputs have the same
dtypes and the same shape after the batch dimension are concatenated along that dimension,
run as one model call, and the outputs split back by row. A batch closes when it reaches
``max_batch_size`` rows or ``batch_timeout_micros`` after its first request arrived. If a
merged call fails with INVALID_ARGUMENT (one request carries a corrupt image, say), each
request is rerun alone so only the bad one gets the error.

Parameters come from the same ``BatchingParameters`` text proto TF Serving reads
(``--batching_parameters_file``, e.g. deploy/batching.config).

``pad_variable_length_inputs: true`` works as in TF Serving: requests whose inputs differ in
size after the batch dimension (``[1, 500, 101]`` and ``[2, 300, 101]``) share a batch, each
input padded at the end of every dimension to the largest size in the batch with the value
of its own first element (a value known to be valid for the model), and every request gets
its rows of the batch's outputs, at the batch's (padded) shapes. It is meant for models that
take the true lengths as another input. Without it, only requests whose shapes match
exactly share a batch (TF Serving would refuse the mismatch instead).

Differences from TF Serving: a request larger than ``max_batch_size`` runs on its own
instead of being split, and under light load (the previous batch held one request and
nothing else is queued) a request runs at once instead of waiting ``batch_timeout_micros``
for others.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.serving.errors import ServingError, overloaded

log = logging.getLogger("rnnkit.serving")


@dataclass
class BatchingOptions:
    """The BatchingParameters fields rnnkit serve uses (TF Serving's defaults otherwise)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 4
    pad_variable_length_inputs: bool = False


_FIELD = re.compile(r"^\s*(\w+)\s*(?:\{\s*value\s*:\s*([^}\s]+)\s*\}|:\s*(\S+))\s*$")
_INT_FIELDS = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"}
_IGNORED = {"thread_pool_name", "allowed_batch_sizes", "enable_large_batch_splitting"}


def parse_batching_parameters(text: str, source: str = "<batching parameters>") -> BatchingOptions:
    """Parse the flat BatchingParameters text proto (``max_batch_size { value: 32 }`` lines).

    The proto is not shipped in tensorflow-serving-api's pip package, so the few scalar
    fields are read line by line; an unknown or malformed line is an error naming it.
    """
    opts = BatchingOptions()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _FIELD.match(line)
        if not m:
            raise ValueError(f"{source}:{n}: cannot parse {line!r}")
        name, value = m[1], m[2] if m[2] is not None else m[3]
        if name in _INT_FIELDS:
            try:
                v = int(value)
            except ValueError:
                raise ValueError(f"{source}:{n}: {name} must be an integer, got {value!r}") from None
            if v < 0 or (name != "batch_timeout_micros" and v == 0):
                raise ValueError(f"{source}:{n}: {name} must be positive, got {v}")
            setattr(opts, name, v)
        elif name == "pad_variable_length_inputs":
            if value not in ("true", "false"):
                raise ValueError(f"{source}:{n}: pad_variable_length_inputs must be true or false")
            opts.pad_variable_length_inputs = value == "true"
        elif name in _IGNORED:
            log.info("%s:%d: %s is accepted but not used by rnnkit serve", source, n, name)
        else:
            raise ValueError(f"{source}:{n}: unknown BatchingParameters field {name!r}")
    return opts


def load_batching_parameters(path: str | Path) -> BatchingOptions:
    """Read ``--batching_parameters_file``."""
    p = Path(path)
    return parse_batching_parameters(p.read_text(), str(p))


class _Task:
    __slots__ = ("callback", "cancelled", "done", "error", "inputs", "key", "result", "rows")

    def __init__(self, inputs: dict[str, np.ndarray], callback: Callable | None = None, pad: bool = False):
        self.inputs = inputs
        self.rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
        # Requests with equal keys may share a batch. With padding only dtype and rank must
        # agree; an input with no elements has no first element to pad with, so its request
        # only joins requests of exactly its own shapes.
        pad = pad and all(v.size for v in inputs.values())
        self.key = tuple(sorted((k, v.dtype.str, v.ndim if pad else v.shape[1:]) for k, v in inputs.items()))
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        # called as callback(result, error) from the batch thread instead of setting `done`
        self.callback = callback
        # set when the caller stopped waiting (its deadline passed): not run if still queued
        self.cancelled = False

    def finish(self, result: dict[str, np.ndarray] | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        if self.callback is not None:
            self.callback(result, error)
        else:
            self.done.set()

    def batchable(self) -> bool:
        """Rows > 0 and every input shares the batch dimension."""
        return self.rows > 0 and all(v.ndim > 0 and v.shape[0] == self.rows for v in self.inputs.values())


class Batcher:
    """Batches calls of one signature of one model version.

    Args:
        run: the unbatched call, inputs -> outputs (raises ServingError).
        options: batching parameters.
        name: for thread names and logs.
    """

    def __init__(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], options: BatchingOptions, name: str):
        self._run = run
        self.options = options
        self._queue: deque[_Task] = deque()
        self._cv = threading.Condition()
        self._stopped = False
        self.batches_run = 0
        self.rows_run = 0
        # Tasks in the last batch taken: a lone request under light load is not held back
        # for batch_timeout_micros waiting for company that is not coming.
        self._last_batch_tasks = 1
        self._threads = [
            threading.Thread(target=self._loop, name=f"rnnkit-batch-{name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, inputs: dict[str, np.ndarray], timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run ``inputs`` as part of a batch; blocks until its own outputs are ready.

        Args:
            inputs: checked input arrays.
            timeout: seconds to wait at most (the caller's deadline); None waits as long as
                it takes. A request still queued when it passes is dropped, not run.

        Raises:
            ServingError: DEADLINE_EXCEEDED when ``timeout`` passes first; RESOURCE_EXHAUSTED
                when the queue is full; the model's own errors.
        """
        task = _Task(inputs, pad=self.options.pad_variable_length_inputs)
        if not task.batchable():
            return self._run(inputs)  # scalars / unequal batch dims: run alone
        self._enqueue(task)
        if not task.done.wait(timeout):
            task.cancelled = True
            raise ServingError("DEADLINE_EXCEEDED", "deadline passed while the request waited for its batch")
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[return-value]

    def submit_async(self, inputs: dict[str, np.ndarray]):
        """Queue ``inputs`` from an asyncio event loop; returns an awaitable of the outputs.

        The event loop never runs the model: the batch threads resolve the future with
        ``call_soon_threadsafe``. Returns None when the inputs cannot be batched (the caller
        then runs them in a worker thread).
        """
        import asyncio

        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def resolve(result, error):
            if not fut.done():
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)

        task = _Task(inputs, callback=lambda r, e: loop.call_soon_threadsafe(resolve, r, e),
                     pad=self.options.pad_variable_length_inputs)
        if not task.batchable():
            return None
        self._enqueue(task)
        return fut

    def _enqueue(self, task: _Task) -> None:
        with self._cv:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "model version is being unloaded; retry")
            if len(self._queue) >= self.options.max_enqueued_batches * self.options.max_batch_size:
                raise overloaded(
                    f"batch queue is full ({len(self._queue)} requests waiting; max_enqueued_batches x "
                    "max_batch_size); retry later"
                )
            self._queue.append(task)
            self._cv.notify()

    def stop(self) -> None:
        """Let the worker threads finish what is queued, then exit."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def _take_batch(self) -> list[_Task] | None:
        o = self.options
        with self._cv:
            while not self._queue:
                if self._stopped:
                    return None
                self._cv.wait()
            first = self._queue.popleft()
            if first.cancelled:
                return []
            batch, rows = [first], first.rows
            timeout = o.batch_timeout_micros / 1e6 if self._last_batch_tasks > 1 or self._queue else 0.0
            deadline = time.perf_counter() + timeout
            while rows < o.max_batch_size:
                for t in list(self._queue):
                    if t.cancelled:
                        self._queue.remove(t)
                    elif t.key == first.key and rows + t.rows <= o.max_batch_size:
                        self._queue.remove(t)
                        batch.append(t)
                        rows += t.rows
                if rows >= o.max_batch_size:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            self._last_batch_tasks = len(batch)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[_Task]) -> None:
        if len(batch) == 1:
            self._finish_alone(batch[0])
            return
        rows = [t.rows for t in batch]
        total = sum(rows)
        merged = {k: np.concatenate(_padded([t.inputs[k] for t in batch])) for k in batch[0].inputs}
        try:
            out = self._run(merged)
        except ServingError as exc:
            if exc.code == "INVALID_ARGUMENT":
                for t in batch:  # find the request at fault: rerun each alone
                    self._finish_alone(t)
                return
            for t in batch:
                t.finish(error=exc)
            return
        except BaseException as exc:  # noqa: BLE001 - deliver, never leave a client waiting
            for t in batch:
                t.finish(error=exc)
            return
        if any(v.ndim == 0 or v.shape[0] != total for v in out.values()):
            # outputs without a per-row batch dimension cannot be split: run each alone
            for t in batch:
                self._finish_alone(t)
            return
        self.batches_run += 1
        self.rows_run += total
        start = 0
        for t, n in zip(batch, rows):
            t.finish({k: v[start : start + n] for k, v in out.items()})
            start += n

    def _finish_alone(self, t: _Task) -> None:
        try:
            result = self._run(t.inputs)
        except BaseException as exc:  # noqa: BLE001
            t.finish(error=exc)
            return
        t.finish(result)


def _padded(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` (same rank) padded after the batch dimension to the largest size in each
    dimension, with each array's own first element (TF Serving's pad_variable_length_inputs)."""
    target = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    out = []
    for a in arrays:
        if a.shape[1:] == target:
            out.append(a)
            continue
        p = np.full((a.shape[0], *target), a.flat[0], dtype=a.dtype)
        p[tuple(slice(0, n) for n in a.shape)] = a
        out.append(p)
    return out
