"""Load test for `rnnkit serve`: N concurrent clients for S seconds against one model.

Starts `rnnkit serve` on free loopback ports (or uses --rest_port/--grpc_port of a server
already running on 127.0.0.1), sends the same realistic requests from N client threads
for S seconds (bounded by --max_requests too), and prints requests/s, p50/p99 latency and
the error count. It also makes the same requests in-process on the SavedModel (same number
of threads, same duration, alternating with the server runs in --rounds slices) and prints
the serving overhead at p50:

    overhead = server p50 / in-process p50 - 1        (target: <= 25 % at 32 clients)

Requests come from the export's own ``assets.extra/tf_serving_warmup_requests`` when it has
one; otherwise the model's single string input gets short review-like sentences.

What the ratio measures: the whole round trip a client sees (its own request encoding, the
loopback, the server's HTTP/gRPC handling, decoding, the model call, encoding, the answer
parsed back) against the same model call made directly with the same inputs as prepared
tensors, from the same number of threads. Clients, server and in-process threads all share
this machine's cores. The clients are kept cheap so that they measure the server rather
than themselves: REST requests are prepared HTTP/1.1 bytes sent on keep-alive connections
and each answer is parsed as JSON; gRPC requests are prepared serialized PredictRequests on
one channel and each answer is parsed as a PredictResponse. Before timing, every distinct
request is sent once and its answer compared with the in-process SavedModel's.

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


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name=V`` / ``--name V`` in ``argv`` (last one wins), else None."""
    value = None
    for i, a in enumerate(argv):
        if a == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
    return value


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


def _loads(data: bytes):
    try:
        import orjson

        return orjson.loads(data)
    except ImportError:
        return json.loads(data)
    except ValueError:
        return json.loads(data)  # NaN literals: orjson refuses them, json reads them


def http_request_bytes(port: int, path: str, body: bytes) -> bytes:
    """A complete keep-alive HTTP/1.1 POST, prepared once and sent as is."""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection on a raw socket: sends prepared requests and reads
    each answer by its Content-Length (the server always sends one). Cheaper per request than
    http.client, so the load generator takes less of the CPU the server runs on."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send ``raw``; returns (status, body). Any socket error closes the connection."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.sendall(raw)
            buf = self.buf
            while (end := buf.find(b"\r\n\r\n")) < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
            head = buf[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            length = None
            for line in head[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
                elif k.strip().lower() == "transfer-encoding":
                    raise ConnectionError(f"unexpected Transfer-Encoding {v.strip()!r}")
            if length is None:
                raise ConnectionError("answer without Content-Length")
            body_end = end + 4 + length
            while len(buf) < body_end:
                chunk = self.sock.recv(max(65536, body_end - len(buf)))
                if not chunk:
                    raise ConnectionError("server closed the connection mid-answer")
                buf += chunk
            self.buf = buf[body_end:]
            if any(line.lower().replace(" ", "") == "connection:close" for line in head[1:]):
                self.close()
            return status, buf[end + 4 : body_end]
        except (OSError, ValueError, IndexError):
            self.close()
            raise


def rest_outputs(body: dict, fmt: str, names: list[str]) -> dict[str, list]:
    """A REST predict answer as output name -> JSON value (row or columnar, one or many outputs)."""
    if fmt == "columnar":
        out = body["outputs"]
        return out if isinstance(out, dict) and len(names) > 1 else {names[0]: out}
    preds = body["predictions"]
    if len(names) == 1:
        return {names[0]: preds}
    return {n: [p[n] for p in preds] for n in names}


def same_answer(got, want: np.ndarray) -> bool:
    """Whether a JSON / array output equals the in-process output (floats to 1e-5, as
    batching can change the last bits of a float by changing the batch it ran in)."""
    if want.dtype == object:
        g = np.array(got, dtype=object) if not isinstance(got, np.ndarray) else got
        if g.shape != want.shape:
            return False
        for a, b in zip(g.reshape(-1), want.reshape(-1)):
            if isinstance(a, dict):
                a = base64.b64decode(a["b64"])
            elif isinstance(a, str):
                a = a.encode("utf-8")
            if a != b:
                return False
        return True
    g = np.asarray(got, dtype=want.dtype)
    if g.shape != want.shape:
        return False
    if want.dtype.kind in "fc":
        return bool(np.allclose(g, want, rtol=1e-5, atol=1e-6, equal_nan=True))
    return bool((g == want).all())


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
    p.add_argument("--format", choices=["columnar", "row"], default="columnar",
                   help="REST body format: columnar {\"inputs\": ...} or row {\"instances\": ...}")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternate server and in-process runs in this many slices of --seconds each (default 2)")
    p.add_argument("--no_in_process", action="store_true")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= MAX_CLIENTS) or not (0 < args.seconds <= MAX_SECONDS):
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # TF thread-pool flags given to the server apply to the in-process side too, so both
    # run the model with the same TensorFlow configuration.
    for flag, setter in (("tensorflow_intra_op_parallelism", tf.config.threading.set_intra_op_parallelism_threads),
                         ("tensorflow_inter_op_parallelism", tf.config.threading.set_inter_op_parallelism_threads)):
        value = _flag_value(args.server_args.split(), flag)
        if value:
            setter(int(value))

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

    # The in-process side: loaded first, so its answers can check the server's.
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    tensors = [{k: tf.constant(v) for k, v in r.items()} for r in requests]
    expected = [{k: v.numpy() for k, v in fn(**t).items()} for t in tensors]
    out_names = sorted(expected[0])

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

        if args.protocol == "rest":
            key = "inputs" if args.format == "columnar" else "instances"
            if args.format == "columnar":
                bodies = [json.dumps({"inputs": {k: to_json_value(v) for k, v in r.items()}}).encode() for r in requests]
            else:
                def rows(r):
                    cols = {k: to_json_value(v) for k, v in r.items()}
                    n = len(next(iter(cols.values())))
                    return cols[next(iter(cols))] if len(cols) == 1 else [{k: c[i] for k, c in cols.items()} for i in range(n)]
                bodies = [json.dumps({key: rows(r)}).encode() for r in requests]
            path = f"/v1/models/{args.model_name}:predict"
            prepared = [http_request_bytes(rest_port, path, b) for b in bodies]

            def make_call(check: bool = False):
                client = KeepAliveClient(rest_port)
                i = [0]

                def call():
                    j = i[0] % len(prepared)
                    i[0] += 1
                    status, data = client.request(prepared[j])
                    if status != 200:
                        raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
                    answer = rest_outputs(_loads(data), args.format, out_names)
                    if check and not all(same_answer(answer[n], expected[j][n]) for n in out_names):
                        raise RuntimeError(f"request {j}: the server's answer differs from the in-process model's")
                return call
        else:
            import grpc
            from tensorflow_serving.apis import predict_pb2

            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            # Raw bytes in and out: the requests are serialized once, each answer is parsed.
            predict_rpc = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            protos = []
            for r in requests:
                pr = predict_pb2.PredictRequest()
                pr.model_spec.name = args.model_name
                for k, v in r.items():
                    pr.inputs[k].CopyFrom(tf.make_tensor_proto(v))
                protos.append(pr.SerializeToString())

            def make_call(check: bool = False):
                i = [0]

                def call():
                    j = i[0] % len(protos)
                    i[0] += 1
                    resp = predict_pb2.PredictResponse.FromString(predict_rpc(protos[j], timeout=60))
                    if len(resp.outputs) != len(out_names):
                        raise RuntimeError(f"answer has outputs {sorted(resp.outputs)}, expected {out_names}")
                    if check and not all(same_answer(tf.make_ndarray(resp.outputs[n]), expected[j][n]) for n in out_names):
                        raise RuntimeError(f"request {j}: the server's answer differs from the in-process model's")
                return call

        # Every distinct request once, answers checked; then a short warm-up.
        check = make_call(check=True)
        for _ in range(len(requests)):
            check()
        print(f"answers equal the in-process SavedModel's for all {len(requests)} distinct requests")
        w = make_call()
        for _ in range(2 * len(requests)):
            w()

        def make_local():
            i = [0]

            def call():
                out = fn(**tensors[i[0] % len(tensors)])
                {k: v.numpy() for k, v in out.items()}
                i[0] += 1
            return call

        if not args.no_in_process:
            w = make_local()
            for _ in range(2 * len(requests)):
                w()
        # Server and in-process runs alternate in --rounds slices (the server idles while the
        # in-process threads run), so load from anything else on the machine falls on both
        # sides alike instead of on whichever happened to run during it.
        one_s = min(args.seconds, 3.0)
        rounds = max(1, args.rounds)
        sides: dict[tuple[str, int], dict] = {}
        for n, secs in ((args.clients, args.seconds), (1, one_s)):
            for _ in range(rounds):
                for side, factory in (("server", make_call), ("in-process", make_local)):
                    if side == "in-process" and args.no_in_process:
                        continue
                    lat, nerr_r, samples, wall = run_clients(n, secs / rounds, args.max_requests, factory)
                    acc = sides.setdefault((side, n), {"lat": [], "errors": 0, "samples": [], "wall": 0.0})
                    acc["lat"].extend(lat)
                    acc["errors"] += nerr_r
                    acc["samples"] = (acc["samples"] + samples)[:3]
                    acc["wall"] += wall
            if proc is not None and proc.poll() is not None:
                raise SystemExit("the server died during the run:\n" + proc.stderr.read()[-3000:])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def summary(side: str, n: int):
        acc = sides[side, n]
        return acc["lat"], acc["errors"], acc["samples"], acc["wall"]

    lat, nerr, samples, wall = summary("server", args.clients)
    s50, s99 = percentiles(lat)
    print(f"server     {args.clients:3d} clients: {len(lat) / wall:8.1f} req/s  p50 {s50:7.2f} ms  p99 {s99:7.2f} ms  "
          f"errors {nerr}  ({len(lat)} ok in {wall:.1f}s)")
    for s in samples:
        print(f"  error: {s}")
    lat1, nerr1, samples1, wall1 = summary("server", 1)
    nerr += nerr1
    print(f"server       1 client : {len(lat1) / wall1:8.1f} req/s  p50 {percentiles(lat1)[0]:7.2f} ms  errors {nerr1}")
    for s in samples1:
        print(f"  error: {s}")
    if args.no_in_process:
        return 1 if nerr else 0
    llat, lerr, _, lwall = summary("in-process", args.clients)
    l50, l99 = percentiles(llat)
    print(f"in-process {args.clients:3d} threads: {len(llat) / lwall:8.1f} req/s  p50 {l50:7.2f} ms  p99 {l99:7.2f} ms  errors {lerr}")
    one, _, _, wone = summary("in-process", 1)
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
