"""Chaos run for `rnnkit serve`: clients keep calling while an operator's faults happen.

    python benchmarks/serve_chaos.py                     # 32 clients, 20 s, REST + gRPC
    python benchmarks/serve_chaos.py --clients 32 --seconds 30 --server_args "--enable_batching"

It exports the small text classifier from ``rnnkit.serving.testing`` (a real SavedModel: hashed
bag of words, string in, probabilities / label / token count out; no training needed) as
version 1, plus versions 2-4 with different weights, and loads all four in this process to
check answers. Then ``rnnkit serve`` starts on free loopback ports with small limits, and for
``--seconds``:

* ``--clients`` threads (half REST on keep-alive connections, half gRPC) send predict
  requests of 1-4 texts back to back;
* version 2 is renamed into place (a normal rollout), version 3 is copied in slowly, file by
  file, the way ``cp -r`` leaves a half-written folder, and version 4 is renamed in later;
* connections open, send half a request body and stall;
* a misbehaving client sends oversized bodies, too many rows, malformed JSON and unknown
  model names, each of which must get its own 4xx;
* at the end the server gets SIGTERM while the clients are still sending.

Every answer is checked against the in-process model of the version that served it (gRPC
says which; for REST any of the exported versions, whose answers all differ). It prints
requests sent, answered correctly, refused with a retryable status (503 / RESOURCE_EXHAUSTED
while busy, 504 / DEADLINE_EXCEEDED, refused connections or UNAVAILABLE once shutdown has
begun), answered wrongly, lost (no answer, or an error that is not one of the above: must be
0), p50 / p99 latency of the correct answers, and the server's exit status.

A REST request written on a keep-alive connection at the moment the server closes it as
idle (shutdown closes idle connections) never reached the application; HTTP clients retry
such a request on a new connection (RFC 9112, 9.3.1) and so do these, once; the count is
printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ["a", "wonderful", "moving", "film", "dull", "far", "too", "long", "ok", "great", "acting", "plot",
         "boring", "loved", "hated", "it", "the", "music", "was", "fine", "never", "again", "best", "year"]
SCALES = {1: 1.0, 2: -2.0, 3: 3.0, 4: -0.5}  # distinct weights: each version answers differently


class Tally:
    """Thread-safe outcome counts and latencies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.examples: dict[str, str] = {}

    def add(self, outcome: str, latency: float | None = None, detail: str = "") -> None:
        with self.lock:
            self.counts[outcome] += 1
            if latency is not None:
                self.latencies.append(latency)
            if detail and outcome not in self.examples:
                self.examples[outcome] = detail[:300]


def _matches(preds: list[dict], want: dict[str, np.ndarray]) -> bool:
    probs = np.array([p["probabilities"] for p in preds], np.float32)
    return (
        probs.shape == want["probabilities"].shape
        and np.allclose(probs, want["probabilities"], atol=1e-5)
        and [p["label"] for p in preds] == [s.decode() for s in want["label"]]
        and [p["num_tokens"] for p in preds] == want["num_tokens"].tolist()
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients, half REST half gRPC (default 32)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of traffic before SIGTERM (default 20)")
    ap.add_argument("--stalled", type=int, default=6, help="stalled uploads opened over the run (default 6)")
    ap.add_argument("--server_args", default="", help="extra rnnkit serve flags")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from rnnkit.serving import testing

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="rnnkit-chaos-"))
    base, staging = work / "models" / "text", work / "staging"
    print(f"exporting 4 versions of the test text model under {work} ...", flush=True)
    testing.export_text_model(base, version=1, scale=SCALES[1])
    exported = {1: base / "1"}
    for v in (2, 3, 4):
        exported[v] = testing.export_text_model(staging, version=v, scale=SCALES[v])
    local = {v: tf.saved_model.load(str(p)).signatures["serving_default"] for v, p in exported.items()}

    pool = [[" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 4))] for _ in range(64)]
    want = {(i, v): {k: t.numpy() for k, t in local[v](text=tf.constant(texts)).items()}
            for i, texts in enumerate(pool) for v in local}
    rest_bodies = [json.dumps({"instances": texts}).encode() for texts in pool]
    grpc_bodies = []
    for texts in pool:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "text"
        req.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([t.encode() for t in texts], dtype=object)))
        grpc_bodies.append(req)

    mon = work / "monitoring.config"
    mon.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    rest_port, grpc_port = testing.free_port(), testing.free_port()
    max_bytes, max_rows, timeout_ms = 64 * 1024, 16, 2000
    server_args = [
        "--port", str(grpc_port), "--rest_api_port", str(rest_port),
        "--model_name", "text", "--model_base_path", str(base),
        "--file_system_poll_wait_seconds", "0.2",
        "--max_request_bytes", str(max_bytes), "--max_rows_per_request", str(max_rows),
        "--rest_api_timeout_in_ms", str(timeout_ms),
        "--rest_api_max_pending_requests", "16", "--grpc_max_concurrent_rpcs", "16",
        "--max_num_load_retries", "100", "--load_retry_interval_micros", "500000",
        "--shutdown_grace_seconds", "20",
        "--monitoring_config_file", str(mon),
        *shlex.split(args.server_args),
    ]
    print("rnnkit serve " + " ".join(server_args), flush=True)
    proc = testing.start_server(server_args, rest_port, "text")

    tally = Tally()
    stop_sending = threading.Event()
    sigterm_at = [None]  # time.monotonic() of SIGTERM
    retried_idle = Counter()

    def after_sigterm() -> bool:
        return sigterm_at[0] is not None

    def rest_client(seed: int) -> None:
        r = random.Random(seed)
        conn = None
        while not stop_sending.is_set():
            i = r.randrange(len(pool))
            for attempt in (0, 1):
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/v1/models/text:predict", body=rest_bodies[i],
                                 headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                    if resp.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except ConnectionRefusedError as exc:
                    conn = None
                    if after_sigterm():
                        tally.add("refused: server stopping")
                        return  # the port is closed: this client is done
                    tally.add("lost", detail=f"REST {exc!r}")
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    conn.close()
                    conn = None
                    if reused and attempt == 0 and after_sigterm():
                        # closed as idle by the shutdown before the request was read: retry once
                        retried_idle["REST"] += 1
                        continue
                    tally.add("lost", detail=f"REST {exc!r}")
                    break
                except OSError as exc:
                    conn = None
                    tally.add("lost", detail=f"REST {exc!r}")
                    break
                dt = time.perf_counter() - t0
                if status == 200:
                    preds = json.loads(data)["predictions"]
                    ok = any(_matches(preds, want[(i, v)]) for v in local)
                    tally.add("correct" if ok else "wrong", dt if ok else None, "" if ok else data.decode()[:200])
                elif status == 503:
                    tally.add("refused: busy (503)")
                elif status == 504:
                    tally.add("refused: timeout (504)")
                else:
                    tally.add("lost", detail=f"REST {status} {data[:200]!r}")
                break

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def grpc_client(seed: int) -> None:
        r = random.Random(seed)
        while not stop_sending.is_set():
            i = r.randrange(len(pool))
            t0 = time.perf_counter()
            try:
                resp = stub.Predict(grpc_bodies[i], timeout=30)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    tally.add("refused: busy (RESOURCE_EXHAUSTED)")
                elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    tally.add("refused: timeout (DEADLINE_EXCEEDED)")
                elif code == grpc.StatusCode.UNAVAILABLE and after_sigterm():
                    tally.add("refused: server stopping")
                    return
                else:
                    tally.add("lost", detail=f"gRPC {code.name}: {exc.details()}")
                continue
            dt = time.perf_counter() - t0
            v = resp.model_spec.version.value
            got = {k: tf.make_ndarray(t) for k, t in resp.outputs.items()}
            w = want.get((i, v))
            ok = (w is not None and np.allclose(got["probabilities"], w["probabilities"], atol=1e-5)
                  and got["label"].tolist() == w["label"].tolist()
                  and got["num_tokens"].tolist() == w["num_tokens"].tolist())
            tally.add("correct" if ok else "wrong", dt if ok else None, "" if ok else f"version {v}")

    bad_expected = Counter()
    bad_unexpected: list[str] = []

    def bad_client() -> None:
        """Oversized, too many rows, malformed, unknown model: each must get its own 4xx."""
        cases = [
            ("oversized body", b'{"instances": ["' + b"x" * (2 * max_bytes) + b'"]}', 413),
            ("too many rows", json.dumps({"instances": ["ok"] * (max_rows + 1)}).encode(), 413),
            ("malformed JSON", b'{"instances": ["unterminated', 400),
            ("wrong input type", json.dumps({"instances": [[1, 2]]}).encode(), 400),
        ]
        k = 0
        while not stop_sending.is_set() and not after_sigterm():
            name, body, expect = cases[k % len(cases)]
            path = "/v1/models/text:predict" if k % 5 else "/v1/models/no_such_model:predict"
            if k % 5 == 0:
                name, body, expect = "unknown model", rest_bodies[0], 404
            k += 1
            try:
                status, _ = testing.RestClient(rest_port).request("POST", path, body, timeout=30)
            except (OSError, ValueError) as exc:
                if not after_sigterm():
                    bad_unexpected.append(f"{name}: {exc!r}")
                continue
            if status == expect or status == 503:
                bad_expected[name] += 1
            else:
                bad_unexpected.append(f"{name}: {status} (expected {expect})")
            time.sleep(0.05)

    stalled_socks: list[socket.socket] = []
    stalled_answers: Counter[str] = Counter()

    def open_stalled() -> None:
        s = socket.create_connection(("127.0.0.1", rest_port), timeout=60)
        s.sendall(b"POST /v1/models/text:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"instances\": [")
        stalled_socks.append(s)

        def reader():
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except OSError:
                pass
            stalled_answers[data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed without answer"] += 1

        threading.Thread(target=reader, daemon=True).start()

    def slow_copy(src: Path, dst: Path, seconds: float) -> None:
        """Copy like `cp -r` on a slow disk: folders and top-level files first, then the
        variables one file at a time, ``seconds`` in all."""
        dst.mkdir()
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, dst / f.name)
            else:
                (dst / f.name).mkdir()
        files = [f for d in src.iterdir() if d.is_dir() for f in d.rglob("*") if f.is_file()]
        for f in files:
            time.sleep(seconds / max(len(files), 1))
            shutil.copy2(f, dst / f.relative_to(src))

    def version_status() -> dict[str, str]:
        try:
            status, body = testing.RestClient(rest_port).get("/v1/models/text")
        except OSError:
            return {}
        return {s["version"]: s["state"] for s in body["model_version_status"]} if status == 200 else {}

    threads = [threading.Thread(target=rest_client, args=(args.seed * 1000 + n,), daemon=True)
               for n in range(args.clients // 2)]
    threads += [threading.Thread(target=grpc_client, args=(args.seed * 1000 + 500 + n,), daemon=True)
                for n in range(args.clients - args.clients // 2)]
    bad = threading.Thread(target=bad_client, daemon=True)
    t_start = time.monotonic()
    for t in threads:
        t.start()
    bad.start()

    events: list[str] = []

    def at(frac: float) -> None:
        time.sleep(max(0.0, t_start + frac * args.seconds - time.monotonic()))

    def log(msg: str) -> None:
        events.append(f"{time.monotonic() - t_start:6.1f} s  {msg}")
        print(events[-1], flush=True)

    stalled_every = args.seconds * 0.8 / max(args.stalled, 1)
    next_stall = t_start + 0.05 * args.seconds
    timeline = [
        (0.15, "rename version 2 into place", lambda: os.replace(exported[2], base / "2")),
        (0.35, "copy version 3 in slowly (3 s)", lambda: slow_copy(exported[3], base / "3", 3.0)),
        (0.70, "rename version 4 into place", lambda: os.replace(exported[4], base / "4")),
    ]
    for frac, what, action in timeline:
        while time.monotonic() < t_start + frac * args.seconds:
            if time.monotonic() >= next_stall and len(stalled_socks) < args.stalled:
                open_stalled()
                log(f"stalled upload #{len(stalled_socks)} opened")
                next_stall += stalled_every
            time.sleep(0.05)
        log(what)
        action()
        log(f"versions: {version_status()}")
    while time.monotonic() < t_start + args.seconds:
        if time.monotonic() >= next_stall and len(stalled_socks) < args.stalled:
            open_stalled()
            log(f"stalled upload #{len(stalled_socks)} opened")
            next_stall += stalled_every
        time.sleep(0.05)
    log(f"versions: {version_status()}")

    metrics_text = ""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10)
        conn.request("GET", "/monitoring/prometheus/metrics")
        metrics_text = conn.getresponse().read().decode()
        conn.close()
    except OSError as exc:
        log(f"metrics scrape failed: {exc!r}")

    open_stalled()  # one more, opened just before the signal: must not hold the exit
    log("SIGTERM")
    sigterm_at[0] = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except Exception:  # noqa: BLE001 - report a hang as such
        proc.kill()
        rc = "hung (killed after 60 s)"
    stop_took = time.monotonic() - sigterm_at[0]
    log(f"server exited with status {rc}")
    stop_sending.set()
    for t in threads:
        t.join(timeout=30)
    channel.close()
    time.sleep(0.2)
    for s in stalled_socks:
        s.close()

    c = tally.counts
    sent = sum(c.values())
    refused = sum(v for k, v in c.items() if k.startswith("refused"))
    lat = np.array(tally.latencies) * 1000
    print()
    print(f"clients {args.clients} ({args.clients // 2} REST, {args.clients - args.clients // 2} gRPC), "
          f"{args.seconds:g} s, server args: {' '.join(server_args[4:])}")
    print(f"requests sent            {sent}")
    print(f"answered correctly       {c['correct']}")
    print(f"refused, retryable       {refused}")
    for k in sorted(k for k in c if k.startswith("refused")):
        print(f"  {k:<30} {c[k]}")
    print(f"answered wrongly         {c['wrong']}")
    print(f"lost                     {c['lost']}")
    for k, v in tally.examples.items():
        print(f"  e.g. {k}: {v}")
    if len(lat):
        print(f"latency of correct answers: p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms")
    print(f"REST requests retried after an idle keep-alive close during shutdown: {retried_idle['REST']}")
    print(f"bad requests answered with their 4xx (or 503 when busy): {sum(bad_expected.values())} "
          f"({dict(bad_expected)}); otherwise: {len(bad_unexpected)} {bad_unexpected[:5]}")
    print(f"stalled uploads: {len(stalled_socks)}, answers: {dict(stalled_answers)}")
    if metrics_text:
        from prometheus_client.parser import text_string_to_metric_families

        fams = {f.name: f for f in text_string_to_metric_families(metrics_text)}
        by = Counter()
        for s in fams[":tensorflow:serving:request_count"].samples:
            by[(s.labels["entrypoint"], s.labels["status"])] += int(s.value)
        print("server's :tensorflow:serving:request_count before SIGTERM: "
              + ", ".join(f"{e}/{st} {n}" for (e, st), n in sorted(by.items())))
    print(f"server exit status {rc}, {stop_took:.1f} s after SIGTERM")
    shutil.rmtree(work, ignore_errors=True)
    ok = c["lost"] == 0 and c["wrong"] == 0 and rc == 0 and not bad_unexpected
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
