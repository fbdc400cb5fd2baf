"""Load test for `rnnkit serve`: N concurrent clients for S seconds against one model.

Starts `rnnkit serve` on free loopback ports (or uses --rest_port/--grpc_port of a server
already running on 127.0.0.1), sends the same realistic requests from N client threads
for S seconds (bounded by --max_requests too), and prints requests/s, p50/p99 latency and
the error count. It then makes the same requests in-process on the SavedModel (same number
of threads, same duration) and prints the serving overhead at p50:

    overhead = server p50 / in-process p50 - 1        (target: <= 25 % at 32 clients)

Requests come from the export's own ``assets.extra/tf_serving_warmup_requests`` when it has
one; otherwise the model's single string input gets short review-like sentences.

    python benchmarks/serve_load.py                            # latest saved_models/sentiment
    python benchmarks/serve_load.py --clients 32 --seconds 10 --protocol grpc
    python benchmarks/serve_load.py --model_base_path saved_models/voice_gender --model_name voice_gender
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SENTENCES = [
    "An absolute joy from start to finish, with a wonderful cast.",
    "Dull, far too long and the plot makes no sense at all.",
    "I did not expect much, but it was surprisingly moving.",
    "The worst film I have seen this year; avoid it.",
    "Solid performances and a clever script make this worth watching.",
    "Beautiful photography cannot save a story this thin.",
]

MAX_CLIENTS, MAX_SECONDS = 256, 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_version(base: Path) -> Path | None:
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
    return base / str(versions[-1]) if versions else None


def build_requests(version_dir: Path) -> list[dict[str, np.ndarray]]:
    """Input dicts for serving_default: from the warmup file, else sentences for a string input."""
    import tensorflow as tf

    from rnnkit.servable import check_servable
    from rnnkit.warmup import read_warmup_requests

    warm = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    reqs = []
    if warm.is_file():
        for log in read_warmup_requests(warm):
            r = log.predict_log.request
            if r.model_spec.signature_name in ("", "serving_default"):
                reqs.append({k: tf.make_ndarray(v) for k, v in r.inputs.items()})
    if reqs:
        return reqs
    sig = check_servable(version_dir).signatures["serving_default"]
    if len(sig.inputs) != 1 or next(iter(sig.inputs.values())).dtype != "string":
        raise SystemExit(f"{version_dir}: no warmup requests and not a single-string-input model; cannot build requests")
    name = next(iter(sig.inputs))
    return [{name: np.array([s.encode()], dtype=object)} for s in SENTENCES]


def to_json_value(arr: np.ndarray):
    if arr.dtype == object:
        def conv(b):
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode("ascii")}
        flat = np.array([conv(b) for b in arr.reshape(-1)], dtype=object)
        return flat.reshape(arr.shape).tolist()
    return arr.tolist()


def percentiles(lat: list[float]) -> tuple[float, float]:
    if not lat:
        return float("nan"), float("nan")
    a = np.array(lat) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_clients(n: int, seconds: float, max_requests: int, make_call) -> tuple[list[float], int, list[str], float]:
    """n threads each looping ``call()`` until time or the request budget runs out."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    budget = [max_requests]
    start_gate = threading.Barrier(n + 1)
    stop_at = [0.0]

    def worker():
        call = make_call()
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            t0 = time.perf_counter()
            try:
                call()
                ok = True
            except Exception as exc:  # noqa: BLE001 - counted, not fatal: the point is to see them
                ok = False
                err = f"{type(exc).__name__}: {exc}"
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    errors.append(err)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join(seconds + 120)
    return lat, len(errors), errors[:3], time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name", default="sentiment")
    p.add_argument("--model_base_path", type=Path, default=None, help="default saved_models/<model_name>")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max_requests", type=int, default=200_000)
    p.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    p.add_argument("--rest_port", type=int, default=0, help="use a server already on 127.0.0.1:PORT")
    p.add_argument("--grpc_port", type=int, default=0)
    p.add_argument("--server_args", default="", help="extra flags for the started rnnkit serve")
    p.add_argument("--no_in_process", action="store_true")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= MAX_CLIENTS) or not (0 < args.seconds <= MAX_SECONDS):
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    base = (args.model_base_path or REPO / "saved_models" / args.model_name).resolve()
    version_dir = latest_version(base)
    tmp = None
    if version_dir is None:
        if args.model_base_path is not None or args.rest_port or args.grpc_port:
            raise SystemExit(f"no exported version under {base}")
        # No export yet: benchmark the small text SavedModel the serving tests use.
        from rnnkit.serving import testing

        tmp = tempfile.TemporaryDirectory(prefix="rnnkit-serve-load-")
        base = Path(tmp.name) / args.model_name
        version_dir = testing.export_text_model(base, version=1)
        print(f"no export under saved_models/{args.model_name}: using the small test text model in {base}")
    requests = build_requests(version_dir)
    print(f"model {args.model_name} version {version_dir.name} ({version_dir}); {len(requests)} distinct requests, "
          f"{args.clients} clients x {args.seconds:g}s over {args.protocol.upper()} on loopback")

    proc = None
    rest_port, grpc_port = args.rest_port, args.grpc_port
    if not rest_port and not grpc_port:
        rest_port, grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "rnnkit.serving", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
               "--model_name", args.model_name, "--model_base_path", str(base), "--log_level", "warning",
               *args.server_args.split()]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if rest_port:
            deadline = time.time() + 180
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=5)
                    c.request("GET", f"/v1/models/{args.model_name}")
                    r = c.getresponse()
                    if r.status == 200:
                        states = json.loads(r.read())["model_version_status"]
                        if any(s["state"] == "AVAILABLE" for s in states):
                            break
                        failed = [s for s in states if s["state"] == "END" and s["status"]["error_message"]]
                        if failed:
                            raise SystemExit(f"the server refused the model: {failed[0]['status']['error_message']}")
                except OSError:
                    pass
                if proc is not None and proc.poll() is not None:
                    raise SystemExit("server exited:\n" + proc.stderr.read())
                if time.time() > deadline:
                    raise SystemExit("server did not become ready")
                time.sleep(0.3)
        bodies = [json.dumps({"inputs": {k: to_json_value(v) for k, v in r.items()}}).encode() for r in requests]
        path = f"/v1/models/{args.model_name}:predict"

        if args.protocol == "rest":
            def make_call():
                conn = [http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)]
                i = [0]

                def call():
                    body = bodies[i[0] % len(bodies)]
                    i[0] += 1
                    try:
                        conn[0].request("POST", path, body=body, headers={"Content-Type": "application/json"})
                        r = conn[0].getresponse()
                        data = r.read()
                    except (ConnectionError, http.client.HTTPException):
                        conn[0].close()
                        conn[0] = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
                        raise
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
                    json.loads(data)
                return call
        else:
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            protos = []
            for r in requests:
                pr = predict_pb2.PredictRequest()
                pr.model_spec.name = args.model_name
                for k, v in r.items():
                    pr.inputs[k].CopyFrom(tf.make_tensor_proto(v))
                protos.append(pr)

            def make_call():
                i = [0]

                def call():
                    stub.Predict(protos[i[0] % len(protos)], timeout=60)
                    i[0] += 1
                return call

        # A short warm-up so first-call tracing is not in the figures.
        w = make_call()
        for _ in range(2 * len(requests)):
            w()
        lat, nerr, samples, wall = run_clients(args.clients, args.seconds, args.max_requests, make_call)
        s50, s99 = percentiles(lat)
        print(f"server     {args.clients:3d} clients: {len(lat) / wall:8.1f} req/s  p50 {s50:7.2f} ms  p99 {s99:7.2f} ms  "
              f"errors {nerr}  ({len(lat)} ok in {wall:.1f}s)")
        for s in samples:
            print(f"  error: {s}")
        one_s = min(args.seconds, 3.0)
        lat1, nerr1, _, wall1 = run_clients(1, one_s, args.max_requests, make_call)
        nerr += nerr1
        print(f"server       1 client : {len(lat1) / wall1:8.1f} req/s  p50 {percentiles(lat1)[0]:7.2f} ms  errors {nerr1}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    if args.no_in_process:
        return 1 if nerr else 0
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    tensors = [{k: tf.constant(v) for k, v in r.items()} for r in requests]

    def make_local():
        i = [0]

        def call():
            out = fn(**tensors[i[0] % len(tensors)])
            {k: v.numpy() for k, v in out.items()}
            i[0] += 1
        return call

    w = make_local()
    for _ in range(2 * len(requests)):
        w()
    llat, lerr, _, lwall = run_clients(args.clients, args.seconds, args.max_requests, make_local)
    l50, l99 = percentiles(llat)
    print(f"in-process {args.clients:3d} threads: {len(llat) / lwall:8.1f} req/s  p50 {l50:7.2f} ms  p99 {l99:7.2f} ms  errors {lerr}")
    one, _, _, wone = run_clients(1, one_s, args.max_requests, make_local)
    o50 = percentiles(one)[0]
    print(f"in-process   1 thread : {len(one) / wone:8.1f} req/s  p50 {o50:7.2f} ms")
    overhead = s50 / l50 - 1.0
    overhead1 = percentiles(lat1)[0] / o50 - 1.0
    verdict = "OK" if overhead <= 0.25 and nerr == 0 else "OVER TARGET"
    print(f"serving overhead at p50, {args.clients} clients: {overhead * 100:+.1f}%   1 client: {overhead1 * 100:+.1f}%   "
          f"throughput: server {len(lat) / wall / (len(llat) / lwall) * 100:.0f}% of in-process")
    print(f"target (<= 25% at p50 with {args.clients} clients, zero errors): {verdict}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    raise SystemExit(main())
