"""Model registry: which versions of which models are loaded, and the poller that updates it.

Mirrors TF Serving's file-system source: a model's base path holds integer-named version
directories; the version policy (default: the highest one) picks which to serve; new
versions are loaded before old ones are unloaded, so a rollout never has a gap. Anything not
named by an integer (``.tmp-3-1234``, ``tmp``) is ignored, which is what makes "export to a
temp dir, then rename" safe: a version only exists once it is complete. A version that
fails to load (copied in by hand and caught half-way, say) is retried as TF Serving does
(``--max_num_load_retries`` times, ``--load_retry_interval_micros`` apart), and after that
whenever any of its files changes.

Messages meant for clients (request errors, a failed version's status) never name server
paths: ``errors.public_message`` replaces them; the log keeps them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.serving.batching import Batcher, BatchingOptions
from rnnkit.serving.codec import tensor_proto_to_array
from rnnkit.serving.config import ModelSpecConfig
from rnnkit.serving.errors import ServingError, invalid, not_found, public_message

log = logging.getLogger("rnnkit.serving")

_VERSION_DIR = re.compile(r"^\d+$")
DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
DEFAULT_MAX_ROWS = 1000  # rows (batch size) one request may carry; --max_rows_per_request


def check_rows(inputs: dict[str, np.ndarray], max_rows: int | None) -> None:
    """Refuse a request whose batch dimension exceeds ``max_rows`` (RESOURCE_EXHAUSTED).

    Args:
        inputs: decoded input arrays.
        max_rows: the limit; None or 0 for none.
    """
    if not max_rows:
        return
    for name, arr in inputs.items():
        if arr.ndim > 0 and arr.shape[0] > max_rows:
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                f"input {name!r} has {arr.shape[0]} rows; the server takes at most {max_rows} per request "
                "(--max_rows_per_request): split it",
            )


def _fingerprint(path: Path) -> tuple[int, int, float]:
    """(file count, total bytes, newest mtime) of everything under ``path``: changes while a
    copy is in progress even when the version directory's own mtime does not (files written
    into ``variables/``)."""
    count, size, newest = 0, 0, 0.0
    for p in path.rglob("*"):
        try:
            st = p.stat()
        except OSError:
            continue
        count += 1
        size += st.st_size if p.is_file() else 0
        newest = max(newest, st.st_mtime)
    return count, size, newest


@dataclass
class _Failure:
    """Retry book-keeping for a version that failed to load."""

    fingerprint: tuple[int, int, float]
    retries: int  # retries done so far (the first attempt is not a retry)
    next_try: float  # time.monotonic() of the next timed retry


def _short_tf_message(exc: Exception) -> str:
    """The cause of a TF error, without the header, traceback and node trailer TF adds.

    Errors raised inside a graph read "Graph execution error:", then "Detected at node
    ..." and a Python traceback, then the message the model wrote (an assert's text, a
    decoder's complaint), then "\t [[{{node ...}}]]": the client needs only that message.
    """
    msg = getattr(exc, "message", None) or str(exc)
    msg = msg.split("\n\t [[")[0]
    lines = [ln.strip() for ln in msg.splitlines()
             if ln.strip() and not ln.startswith((" ", "\t"))]
    causes = [ln for ln in lines
              if ln not in ("Graph execution error:", "<stack traces unavailable>")
              and not ln.startswith("Detected at node")]
    text = causes[-1] if causes else (lines[0] if lines else type(exc).__name__)
    # Eager errors wrap the same message in "{{function_node ...}} ... [Op:Name]".
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[\w.]+\]$", "", text)


class LoadedVersion:
    """One loaded model version: its signatures and the callable behind each.

    Args:
        name: model name.
        version: version number.
        path: the version directory.
        batching: batch concurrent requests (``--enable_batching``) with these options.
        max_rows: refuse requests with more rows than this (None: no limit).
    """

    def __init__(
        self, name: str, version: int, path: Path, batching: BatchingOptions | None = None,
        max_rows: int | None = None,
    ):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name = name
        self.version = version
        self.path = path
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
        serve = [mg for mg in sm.meta_graphs if "serve" in mg.meta_info_def.tags]
        if not serve:
            raise ValueError("saved_model.pb has no meta graph tagged 'serve'")
        # The proto's SignatureDefs are what GetModelMetadata reports, with TF's tensor names.
        self.signature_defs = dict(serve[0].signature_def)
        self._obj = tf.saved_model.load(str(path), tags=["serve"])
        self._fns = dict(self._obj.signatures)
        self._batching = batching
        self.max_rows = max_rows
        self._batchers: dict[str, Batcher] = {}
        self._batchers_lock = threading.Lock()

    def signature(self, signature_name: str):
        """The SignatureDef for ``signature_name`` ('' means serving_default)."""
        key = signature_name or DEFAULT_SIGNATURE
        sig = self.signature_defs.get(key)
        if sig is None or key not in self._fns:
            names = sorted(k for k in self._fns)
            raise invalid(f"signature {key!r} not found in model {self.name!r} version {self.version}; signatures: {names}")
        return key, sig

    def run(
        self,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_filter: Iterable[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature on checked input arrays.

        Args:
            signature_name: signature key ('' = serving_default).
            inputs: input name -> array, exactly the signature's inputs (already dtype/shape checked).
            output_filter: if non-empty, only these outputs are returned.
            deadline: ``time.monotonic()`` after which the caller no longer waits (a gRPC
                deadline, the REST timeout): past it the model is not run, and a batched
                request stops waiting for its batch.

        Raises:
            ServingError: INVALID_ARGUMENT when the model rejects the data (e.g. a corrupt image
                makes a decode op fail), INTERNAL for other TensorFlow errors,
                DEADLINE_EXCEEDED when ``deadline`` has passed.
        """

        key, sig = self.signature(signature_name)
        missing = sorted(set(sig.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(sig.inputs))
        if missing or extra:
            raise invalid(
                f"signature {key!r} takes inputs {sorted(sig.inputs)}; "
                + (f"missing {missing} " if missing else "")
                + (f"unknown {extra}" if extra else "")
            )
        wanted = list(output_filter)
        bad = sorted(set(wanted) - set(sig.outputs))
        if bad:
            raise invalid(f"output_filter names unknown output(s) {bad}; signature {key!r} outputs {sorted(sig.outputs)}")
        check_rows(inputs, self.max_rows)
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                # it waited in a queue past its deadline: nobody wants the answer any more
                raise ServingError("DEADLINE_EXCEEDED", "deadline passed before the model ran")
        if self._batching is not None:
            result = self._batcher(key).submit(inputs, timeout)
        else:
            result = self._call(key, inputs)
        return {k: v for k, v in result.items() if not wanted or k in wanted}

    @property
    def batching(self) -> bool:
        """Whether requests to this version are batched."""
        return self._batching is not None

    def submit_async(self, signature_name: str, inputs: dict[str, np.ndarray]):
        """With batching: queue checked inputs from the event loop; an awaitable of all
        outputs, or None when they cannot be batched (run them with ``run`` in a thread)."""
        key, sig = self.signature(signature_name)
        if self._batching is None or set(inputs) != set(sig.inputs):
            return None
        check_rows(inputs, self.max_rows)
        return self._batcher(key).submit_async(inputs)

    def _call(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One model call on checked inputs; TF errors become ServingErrors."""
        import tensorflow as tf

        sig = self.signature_defs[key]
        tensors = {
            n: tf.constant(a, dtype=tf.dtypes.as_dtype(sig.inputs[n].dtype)) for n, a in inputs.items()
        }
        try:
            result = self._fns[key](**tensors)
            return {k: v.numpy() for k, v in result.items()}
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as exc:
            raise invalid(f"model {self.name!r} rejected the input: {_short_tf_message(exc)}") from None
        except tf.errors.OpError as exc:
            raise ServingError("INTERNAL", f"model {self.name!r} failed: {_short_tf_message(exc)}") from None
        except UnicodeDecodeError as exc:
            # TF could not turn an error message that quotes the (binary) input into str: the
            # op failed on the input, so it is the request's fault.
            raw = exc.object if isinstance(exc.object, bytes) else b""
            text = raw.decode("utf-8", "replace").split("\n\t [[")[0][:300]
            raise invalid(f"model {self.name!r} rejected the input: {text}") from None

    def _batcher(self, key: str) -> Batcher:
        with self._batchers_lock:
            b = self._batchers.get(key)
            if b is None:
                b = Batcher(lambda x: self._call(key, x), self._batching, f"{self.name}-{self.version}-{key}")  # type: ignore[arg-type]
                self._batchers[key] = b
            return b

    def close(self) -> None:
        """Stop batching threads (queued requests still finish)."""
        with self._batchers_lock:
            for b in self._batchers.values():
                b.stop()

    def warmup(self) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests`` like TF Serving; returns the count."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        n = 0
        for raw in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS).as_numpy_iterator():
            plog = prediction_log_pb2.PredictionLog.FromString(raw)
            if plog.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path}: only predict_log warmup records are supported")
            req = plog.predict_log.request
            key, sig = self.signature(req.model_spec.signature_name)
            arrays = {}
            for name, proto in req.inputs.items():
                if name not in sig.inputs:
                    raise ValueError(f"{path}: warmup record {n} names unknown input {name!r}")
                arrays[name] = tensor_proto_to_array(proto, name, sig.inputs[name])
            self.run(key, arrays)
            n += 1
        return n


@dataclass
class VersionState:
    """TF Serving's ModelVersionStatus for one version."""

    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""
    loaded: LoadedVersion | None = None
    load_seconds: float = 0.0


class ModelRegistry:
    """Loads and unloads versions of the configured models, and answers lookups.

    Args:
        specs: the models to serve.
        poll_wait_seconds: seconds between file-system polls; <= 0 polls only once (at start).
        batching: if given, concurrent requests are batched (``--enable_batching``).
        servable_check: refuse a version that TF Serving itself could not serve
            (``rnnkit.servable.check_servable``: non-core ops, variables its loader would
            not restore, failing warmup records), so both servers accept the same exports.
        max_num_load_retries: retries of a version that failed to load (TF Serving's flag,
            default 5); after them it is retried only when its files change.
        load_retry_interval_seconds: seconds between those retries (TF Serving: 60).
        max_rows_per_request: refuse requests with more rows (0: no limit).
    """

    def __init__(
        self,
        specs: list[ModelSpecConfig],
        poll_wait_seconds: float = 1.0,
        batching: BatchingOptions | None = None,
        servable_check: bool = True,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        max_rows_per_request: int = DEFAULT_MAX_ROWS,
    ):
        self.specs = {s.name: s for s in specs}
        self.batching = batching
        self.servable_check = servable_check
        self.poll_wait_seconds = poll_wait_seconds
        self._states: dict[str, dict[int, VersionState]] = {s.name: {} for s in specs}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_seconds = load_retry_interval_seconds
        self.max_rows_per_request = max_rows_per_request
        # (model, version) pairs that failed to load, with their retry state.
        self._failed: dict[tuple[str, int], _Failure] = {}
        # (model, "OK" | "ERROR") -> load attempts, for the monitoring endpoint.
        self.load_attempts: dict[tuple[str, str], int] = {}

    # ---- lookups -------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """Configured model names."""
        return sorted(self.specs)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """The loaded version to use for a request.

        Args:
            name: model name.
            version: a specific version, or None for the highest available one.
            label: a version label from the config (``version_labels``), instead of a version.

        Raises:
            ServingError: NOT_FOUND for an unknown model, version or label, or when no version
                is available yet.
        """
        if name not in self.specs:
            raise not_found(f"model {name!r} not found; serving {self.model_names()}")
        if label is not None:
            labels = self.specs[name].labels
            if label not in labels:
                raise not_found(f"model {name!r} has no version label {label!r}; labels: {sorted(labels)}")
            version = labels[label]
        with self._lock:
            states = self._states[name]
            if version is None:
                avail = [v for v, s in states.items() if s.state == "AVAILABLE"]
                if not avail:
                    failed = sorted((v, s.error_message) for v, s in states.items() if s.error_message)
                    why = f"; version {failed[-1][0]} failed to load: {failed[-1][1]}" if failed else ""
                    raise not_found(f"model {name!r}: no version available yet{why}")
                return states[max(avail)].loaded  # type: ignore[return-value]
            st = states.get(version)
            if st is None or st.state != "AVAILABLE":
                avail = sorted(v for v, s in states.items() if s.state == "AVAILABLE")
                raise not_found(f"model {name!r} version {version} is not available; available versions: {avail}")
            return st.loaded  # type: ignore[return-value]

    def statuses(self, name: str, version: int | None = None) -> list[tuple[int, VersionState]]:
        """(version, state) pairs for a model, newest first; NOT_FOUND if unknown/absent."""
        if name not in self.specs:
            raise not_found(f"model {name!r} not found; serving {self.model_names()}")
        with self._lock:
            items = sorted(self._states[name].items(), reverse=True)
        if version is not None:
            items = [(v, s) for v, s in items if v == version]
            if not items:
                raise not_found(f"model {name!r} has no version {version}")
        if not items:
            raise not_found(f"model {name!r}: no versions found in its base path")
        return items

    # ---- polling -------------------------------------------------------------------------
    @staticmethod
    def scan_versions(base: Path) -> dict[int, Path]:
        """Integer-named version directories under ``base`` that contain a SavedModel."""
        found: dict[int, Path] = {}
        try:
            entries = list(base.iterdir())
        except OSError:
            return found
        for p in entries:
            if _VERSION_DIR.match(p.name) and p.is_dir() and (p / "saved_model.pb").is_file():
                found[int(p.name)] = p
        return found

    def _desired(self, spec: ModelSpecConfig, on_disk: dict[int, Path]) -> set[int]:
        if spec.policy == "all":
            return set(on_disk)
        if spec.policy == "specific":
            return set(spec.versions) & set(on_disk)
        return set(sorted(on_disk)[-spec.num_versions :])

    def poll_once(self) -> None:
        """Scan every model's base path once: load wanted new versions, then unload the rest."""
        for spec in self.specs.values():
            on_disk = self.scan_versions(spec.base_path)
            if not on_disk:
                log.debug("no versions of %s under %s", spec.name, spec.base_path)
            desired = self._desired(spec, on_disk)
            with self._lock:
                current = dict(self._states[spec.name])
            for v in sorted(desired):
                st = current.get(v)
                if st is not None and st.state == "AVAILABLE":
                    continue
                if not self._due(spec.name, v, on_disk[v]):
                    continue
                self._load(spec.name, v, on_disk[v])
            # Unload what is no longer wanted only once a wanted version is up: a rollout has
            # no gap, and a new version that fails to load leaves the old one serving.
            with self._lock:
                states = self._states[spec.name]
                if not any(states.get(v) and states[v].state == "AVAILABLE" for v in desired):
                    continue
                for v, st in list(states.items()):
                    if v not in desired and st.state == "AVAILABLE":
                        log.info("unloading %s version %d", spec.name, v)
                        if st.loaded is not None:
                            st.loaded.close()
                        st.loaded = None  # in-flight requests keep their own reference
                        st.state = "END"

    def _due(self, name: str, version: int, path: Path) -> bool:
        """Whether a version that is not loaded should be (re)tried now."""
        failure = self._failed.get((name, version))
        if failure is None:
            return True
        if failure.retries < self.max_num_load_retries:
            return time.monotonic() >= failure.next_try
        # Retries used up: try again only once the files have changed (a copy went on).
        return _fingerprint(path) != failure.fingerprint

    def _load(self, name: str, version: int, path: Path) -> None:
        with self._lock:
            self._states[name][version] = VersionState(state="LOADING")
        t0 = time.perf_counter()
        try:
            if self.servable_check:
                from rnnkit.servable import NotServableError, check_servable

                try:
                    check_servable(path)
                except NotServableError as exc:
                    self._mark_failed(name, version, path, f"TF Serving could not serve it: {exc}")
                    return
            loaded = LoadedVersion(name, version, path, self.batching, self.max_rows_per_request)
            n = loaded.warmup()
        except ServingError as exc:
            self._mark_failed(name, version, path, f"warmup request failed: {exc.message}")
            return
        except Exception as exc:  # noqa: BLE001 - any load failure must leave the server serving the rest
            self._mark_failed(name, version, path, f"{type(exc).__name__}: {_short_tf_message(exc)}")
            return
        dt = time.perf_counter() - t0
        self._failed.pop((name, version), None)
        with self._lock:
            self._states[name][version] = VersionState(state="AVAILABLE", loaded=loaded, load_seconds=dt)
            self.load_attempts[(name, "OK")] = self.load_attempts.get((name, "OK"), 0) + 1
        log.info("loaded %s version %d from %s in %.2fs (%d warmup requests)", name, version, path, dt, n)

    def _mark_failed(self, name: str, version: int, path: Path, message: str) -> None:
        prev = self._failed.get((name, version))
        fingerprint = _fingerprint(path)
        if prev is None or (prev.retries >= self.max_num_load_retries and fingerprint != prev.fingerprint):
            retries = 0  # a first failure, or files changed after the retries were used up
        else:
            retries = prev.retries + 1
        self._failed[(name, version)] = _Failure(
            fingerprint, retries, time.monotonic() + self.load_retry_interval_seconds
        )
        left = self.max_num_load_retries - retries
        when = (f"retrying in {self.load_retry_interval_seconds:g} s ({left} retries left)" if left > 0
                else "no retries left; retried when its files change")
        log.error("failed to load %s version %d from %s: %s; %s", name, version, path, message, when)
        with self._lock:
            self._states[name][version] = VersionState(
                state="END", error_code="UNKNOWN", error_message=public_message(message)
            )
            self.load_attempts[(name, "ERROR")] = self.load_attempts.get((name, "ERROR"), 0) + 1

    def start(self) -> None:
        """Poll once now (so models are up before the ports open), then poll in a thread."""
        self.poll_once()
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="rnnkit-model-poller", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # keep polling whatever one scan hit
                log.exception("model poll failed")

    def stop(self) -> None:
        """Stop the poller thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
