"""``rnnkit serve``: a TF-Serving-compatible model server (REST + gRPC) for SavedModels.

Takes tensorflow_model_server's flags for what it supports, so the same command line and
the same clients work against either:

    rnnkit serve --port 8500 --rest_api_port 8501 --model_config_file deploy/models.local.config
    rnnkit serve --rest_api_port 8501 --model_name sentiment --model_base_path saved_models/sentiment

SIGTERM / SIGINT start a graceful shutdown: both ports stop accepting at once, every request
already accepted is answered (REST and gRPC), then the process exits 0. Requests still
running ``--shutdown_grace_seconds`` after the signal are abandoned and the exit status is
1; a second signal abandons them at once. A client stalled mid-upload is answered 408 at
``--rest_api_timeout_in_ms``, so it cannot hold the shutdown open.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("rnnkit.serving")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (tensorflow_model_server's flag names, plus a few rnnkit extras)."""
    p = argparse.ArgumentParser(
        prog="rnnkit serve",
        description="Serve SavedModels with TensorFlow Serving's REST and gRPC APIs.",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0 disables gRPC)")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (default 0: REST disabled, as in TF Serving)")
    p.add_argument("--model_config_file", type=Path, help="ModelServerConfig text proto listing the models")
    p.add_argument("--model_name", default="default", help="model name when serving one model (default 'default')")
    p.add_argument("--model_base_path", type=Path, help="directory of integer version subdirectories for --model_name")
    p.add_argument(
        "--file_system_poll_wait_seconds", type=float, default=1.0,
        help="seconds between scans for new versions (default 1; <= 0: scan only at start)",
    )
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False,
                   help="batch concurrent requests to one model (default false)")
    p.add_argument("--batching_parameters_file", type=Path,
                   help="BatchingParameters text proto (e.g. deploy/batching.config); implies nothing unless --enable_batching")
    p.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="threads running REST predict calls without batching (default 0: 4 per CPU, at least 8)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads one TF op may use (default 0: TensorFlow picks, one per core)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="threads running independent TF ops (default 0: TensorFlow picks)")
    # rnnkit extras (TF Serving binds every interface and has no body limit flag).
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument(
        "--max_request_bytes", type=int, default=16 * 1024 * 1024,
        help="largest REST body / gRPC message accepted (default 16 MiB); larger gets 413 / RESOURCE_EXHAUSTED",
    )
    p.add_argument("--skip_servable_check", action="store_true",
                   help="serve versions that TF Serving would refuse (default: refuse them, with the reason in the status)")
    p.add_argument("--grpc_max_threads", type=int, default=0,
                   help="gRPC worker threads (default 0: 4 per CPU, at least 8; with batching at least "
                        "max_batch_size, so a whole batch can be waiting at once)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="per REST predict request, from arrival to answer (default 30000, as TF Serving; "
                        "0: none): a body not received by then gets 408, an answer not ready 504")
    p.add_argument("--monitoring_config_file", type=Path,
                   help="MonitoringConfig text proto; prometheus_config { enable: true path: ... } serves "
                        "Prometheus metrics at that path on the REST port")
    p.add_argument("--max_num_load_retries", type=int, default=5,
                   help="retries of a version that failed to load (default 5, as TF Serving)")
    p.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                   help="microseconds between load retries (default 60 s, as TF Serving)")
    # rnnkit extras for operating it (TF Serving has no equivalent flags).
    p.add_argument("--shutdown_grace_seconds", type=float, default=25.0,
                   help="after SIGTERM/SIGINT, seconds to finish accepted requests before exiting anyway "
                        "(default 25: below Kubernetes' 30 s termination grace)")
    p.add_argument("--rest_api_max_pending_requests", type=int, default=0,
                   help="REST predict requests admitted at once (reading, queued, running); more get 503 "
                        "(default 0: 4 per REST thread, at least 64)")
    p.add_argument("--rest_api_max_connections", type=int, default=1000,
                   help="open REST connections; more get 503 (default 1000)")
    p.add_argument("--grpc_max_concurrent_rpcs", type=int, default=0,
                   help="gRPC calls admitted at once (running or queued); more get RESOURCE_EXHAUSTED "
                        "(default 0: 4 per gRPC thread, at least 64)")
    p.add_argument("--max_rows_per_request", type=int, default=1000,
                   help="rows (batch size) one request may carry; more get 413 / RESOURCE_EXHAUSTED "
                        "(default 1000; 0: no limit)")
    p.add_argument("--log_level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _bool(v: str) -> bool:
    # TF Serving flags are written --enable_batching=true; accept the usual spellings.
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def _specs(args: argparse.Namespace):
    from rnnkit.serving.config import ConfigError, ModelSpecConfig, load_model_config_file

    if args.model_config_file and args.model_base_path:
        raise ConfigError("give either --model_config_file or --model_base_path, not both")
    if args.model_config_file:
        return load_model_config_file(args.model_config_file)
    if args.model_base_path:
        return [ModelSpecConfig(name=args.model_name, base_path=args.model_base_path.resolve())]
    raise ConfigError("nothing to serve: give --model_config_file, or --model_name and --model_base_path")


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM.

    Args:
        argv: command-line arguments (without the program name); None reads sys.argv.

    Returns:
        Process exit code (0 after a clean shutdown, 2 for bad flags/config).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from rnnkit.serving.config import ConfigError

    try:
        specs = _specs(args)
    except ConfigError as exc:
        print(f"rnnkit serve: {exc}", file=sys.stderr)
        return 2
    if args.port == 0 and args.rest_api_port == 0:
        print("rnnkit serve: both --port and --rest_api_port are 0: nothing to listen on", file=sys.stderr)
        return 2
    for s in specs:
        if not s.base_path.is_dir():
            log.warning("model %s: base path %s does not exist yet; waiting for versions", s.name, s.base_path)

    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        # Must happen before the first model loads (TF fixes its thread pools then).
        if args.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        if args.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)

    metrics_path = None
    if args.monitoring_config_file:
        from rnnkit.serving.metrics import load_monitoring_config

        try:
            metrics_path = load_monitoring_config(args.monitoring_config_file)
        except ValueError as exc:
            print(f"rnnkit serve: --monitoring_config_file: {exc}", file=sys.stderr)
            return 2
        if metrics_path and not args.rest_api_port:
            print("rnnkit serve: Prometheus metrics are served on the REST port: give --rest_api_port", file=sys.stderr)
            return 2
    if args.shutdown_grace_seconds < 0 or args.max_num_load_retries < 0 or args.load_retry_interval_micros < 0:
        print("rnnkit serve: --shutdown_grace_seconds, --max_num_load_retries and --load_retry_interval_micros "
              "must not be negative", file=sys.stderr)
        return 2

    # Signals first: a SIGTERM while the models load must also end the process cleanly.
    stopping = _Shutdown()
    stopping.install()

    import uvicorn

    from rnnkit.serving.grpc_service import build_grpc_server
    from rnnkit.serving.registry import ModelRegistry
    from rnnkit.serving.rest import build_app, default_max_pending, default_num_threads

    batching = None
    if args.enable_batching:
        from rnnkit.serving.batching import BatchingOptions, load_batching_parameters

        try:
            batching = load_batching_parameters(args.batching_parameters_file) if args.batching_parameters_file else BatchingOptions()
        except (OSError, ValueError) as exc:
            print(f"rnnkit serve: --batching_parameters_file: {exc}", file=sys.stderr)
            return 2
        log.info("batching on: %s", batching)
    registry = ModelRegistry(
        specs, poll_wait_seconds=args.file_system_poll_wait_seconds, batching=batching,
        servable_check=not args.skip_servable_check,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_seconds=args.load_retry_interval_micros / 1e6,
        max_rows_per_request=args.max_rows_per_request,
    )
    metrics = None
    if metrics_path:
        from rnnkit.serving.metrics import Metrics

        metrics = Metrics(registry)
    registry.start()
    grpc_server = None
    app = None
    abandoned = 0
    grace = args.shutdown_grace_seconds
    try:
        if stopping.requested:
            log.info("signal received while loading models: exiting")
            return 0
        if args.port:
            threads = args.grpc_max_threads or default_num_threads()
            if batching is not None and not args.grpc_max_threads:
                # each waiting request holds a gRPC thread: fewer threads than a batch's
                # worth of requests would cap every batch at the thread count
                threads = max(threads, min(batching.max_batch_size, 256))
            grpc_server, gport = build_grpc_server(
                registry, f"{args.host}:{args.port}", threads, args.max_request_bytes,
                max_concurrent_rpcs=args.grpc_max_concurrent_rpcs or default_max_pending(threads),
                metrics=metrics,
            )
            grpc_server.start()

            def stop_grpc(force: bool) -> None:
                # drain: calls in handlers finish, new ones get UNAVAILABLE; grpcio's server
                # is stopped once they are done (below)
                grpc_server.in_flight.draining = True
                if force:
                    grpc_server.stop(0)

            stopping.on_stop(stop_grpc)
            log.info("gRPC (tensorflow.serving.PredictionService, ModelService) on %s:%d", args.host, gport)
        if args.rest_api_port:
            app = build_app(
                registry, max_body_bytes=args.max_request_bytes, num_threads=args.rest_api_num_threads or None,
                max_pending=args.rest_api_max_pending_requests or None,
                timeout_seconds=args.rest_api_timeout_in_ms / 1000, metrics=metrics, metrics_path=metrics_path,
            )
            try:
                import httptools  # noqa: F401  (uvicorn's C parser: less CPU per request)

                http_impl = "httptools"
            except ImportError:
                http_impl = "h11"
            try:
                import uvloop  # noqa: F401  (libuv event loop: less CPU per request than asyncio's)

                loop_impl = "uvloop"
            except ImportError:
                loop_impl = "asyncio"
            config = uvicorn.Config(
                app, host=args.host, port=args.rest_api_port, log_level="warning",
                access_log=False, lifespan="off", http=http_impl, loop=loop_impl,
                timeout_graceful_shutdown=max(grace, 0.1),
                limit_concurrency=args.rest_api_max_connections or None,
            )
            server = _make_quiet_uvicorn()(config)

            def stop_rest(force: bool) -> None:
                server.should_exit = True  # closes the listening socket and idle connections
                if force:
                    server.force_exit = True

            stopping.on_stop(stop_rest)
            log.info("REST on http://%s:%d/v1/models/<name>", args.host, args.rest_api_port)
            if metrics_path:
                log.info("Prometheus metrics on http://%s:%d%s", args.host, args.rest_api_port, metrics_path)
            try:
                server.run()
            finally:
                app.executor.shutdown(wait=False, cancel_futures=True)
            if not server.started and not stopping.requested:
                print(f"rnnkit serve: could not start REST on {args.host}:{args.rest_api_port}", file=sys.stderr)
                return 1
            abandoned += app.admitted()
        elif grpc_server is not None:
            stopping.wait()
    finally:
        if grpc_server is not None:
            grpc_server.in_flight.draining = True
            end = time.monotonic() + (grace - stopping.elapsed() if stopping.requested and not stopping.forced else 0.0)
            while grpc_server.in_flight.count and time.monotonic() < end:
                time.sleep(0.05)
            # calls still queued for a thread get their UNAVAILABLE within this second;
            # without a signal (an error above) this stops gRPC now
            if not grpc_server.stop(1.0 if stopping.requested else 0).wait(2.0):
                abandoned += 1
            # cancelled calls whose handler is still inside a model call
            abandoned += grpc_server.in_flight.count
        registry.stop()
    if stopping.requested:
        log.info("shutdown finished %.2f s after the signal", stopping.elapsed())
    if abandoned or stopping.forced:
        log.error("requests still running after the shutdown grace period were abandoned")
        logging.shutdown()
        sys.stderr.flush()
        # worker threads still inside a model call cannot be stopped, and the interpreter
        # would wait for them at exit
        os._exit(1)
    return 0


def _make_quiet_uvicorn():
    import uvicorn

    class QuietUvicorn(uvicorn.Server):
        """uvicorn without its own signal handling: ``main`` installs handlers for both APIs,
        and uvicorn's would re-raise the signal at exit (exit status -15 instead of 0)."""

        def capture_signals(self):
            import contextlib

            return contextlib.nullcontext()

    return QuietUvicorn


class _Shutdown:
    """SIGTERM / SIGINT: the first starts a graceful stop, a second forces it."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self._at = 0.0
        self._event = threading.Event()
        self._stoppers: list = []

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def on_stop(self, fn) -> None:
        """Call ``fn(force)`` when a signal arrives (at once if one already has)."""
        self._stoppers.append(fn)
        if self.requested:
            fn(self.forced)

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("%s again: abandoning the requests still running", name)
            self.forced = True
        else:
            log.info("%s: no longer accepting; finishing accepted requests", name)
            self.requested = True
            self._at = time.monotonic()
        for fn in self._stoppers:
            fn(self.forced)
        self._event.set()

    def elapsed(self) -> float:
        return time.monotonic() - self._at

    def wait(self) -> None:
        # a timed wait so the main thread keeps running Python signal handlers
        while not self._event.wait(0.5):
            pass
