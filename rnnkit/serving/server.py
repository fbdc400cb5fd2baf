"""``rnnkit serve``: a TF-Serving-compatible model server (REST + gRPC) for SavedModels.

Takes tensorflow_model_server's flags for what it supports, so the same command line and
the same clients work against either:

    rnnkit serve --port 8500 --rest_api_port 8501 --model_config_file deploy/models.local.config
    rnnkit serve --rest_api_port 8501 --model_name sentiment --model_base_path saved_models/sentiment
"""

from __future__ import annotations

import argparse
import logging
import sys
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

    import uvicorn

    from rnnkit.serving.grpc_service import build_grpc_server
    from rnnkit.serving.registry import ModelRegistry
    from rnnkit.serving.rest import build_app, default_num_threads

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
    )
    registry.start()
    grpc_server = None
    try:
        if args.port:
            threads = args.grpc_max_threads or default_num_threads()
            if batching is not None and not args.grpc_max_threads:
                # each waiting request holds a gRPC thread: fewer threads than a batch's
                # worth of requests would cap every batch at the thread count
                threads = max(threads, min(batching.max_batch_size, 256))
            grpc_server, gport = build_grpc_server(
                registry, f"{args.host}:{args.port}", threads, args.max_request_bytes
            )
            grpc_server.start()
            log.info("gRPC (tensorflow.serving.PredictionService, ModelService) on %s:%d", args.host, gport)
        if args.rest_api_port:
            app = build_app(registry, max_body_bytes=args.max_request_bytes, num_threads=args.rest_api_num_threads or None)
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
            )
            server = uvicorn.Server(config)
            log.info("REST on http://%s:%d/v1/models/<name>", args.host, args.rest_api_port)
            try:
                server.run()  # handles SIGINT / SIGTERM
            finally:
                app.executor.shutdown(wait=False, cancel_futures=True)
            if not server.started:
                print(f"rnnkit serve: could not start REST on {args.host}:{args.rest_api_port}", file=sys.stderr)
                return 1
        elif grpc_server is not None:
            _wait_for_signal()
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=2).wait()
        registry.stop()
    return 0


def _wait_for_signal() -> None:
    import signal
    import threading

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
