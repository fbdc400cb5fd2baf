"""Prometheus metrics for ``rnnkit serve``, as TF Serving exports them (``--monitoring_config_file``).

TF Serving reads a ``MonitoringConfig`` text proto::

    prometheus_config {
      enable: true
      path: "/monitoring/prometheus/metrics"
    }

and then answers ``GET <path>`` on the REST port with Prometheus text. The same file works
here. Metric names are TF Serving's where it has one:

* ``:tensorflow:serving:request_count`` (counter; labels ``model_name``, ``status`` as TF
  Serving, plus ``API`` and ``entrypoint``): requests answered, by outcome.
* ``:tensorflow:serving:request_latency`` (histogram in microseconds, labels
  ``model_name``, ``API``, ``entrypoint`` as TF Serving): time from request to answer.

and rnnkit's own otherwise (``:rnnkit:serving:...``): requests in flight, available
versions per model, each version's state, load attempts.

The exposition is prometheus_client's; that library writes every counter with a ``_total``
suffix, so TF Serving's ``:tensorflow:serving:request_count`` series is
``:tensorflow:serving:request_count_total`` here (Prometheus' own naming rule for counters).
"""

from __future__ import annotations

from pathlib import Path

from rnnkit.serving.registry import ModelRegistry

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default prometheus_config.path
# TF Serving's request_latency buckets: microseconds, 10 us growing by 1.8x (33 buckets,
# up to ~25 minutes).
LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))


def _monitoring_config_class():
    """tensorflow_serving/config/monitoring_config.proto's MonitoringConfig (not shipped in
    the tensorflow-serving-api wheel), declared field for field so a text proto is parsed
    strictly: a misspelt field is an error, as in TF Serving."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="rnnkit_monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prom = fdp.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    mon = fdp.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE,
                  type_name=".tensorflow.serving.PrometheusConfig", label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def load_monitoring_config(path: str | Path) -> str | None:
    """Read ``--monitoring_config_file``; the metrics path, or None when Prometheus is off.

    Args:
        path: the MonitoringConfig text proto.

    Raises:
        ValueError: the file cannot be read or parsed, or the path is not absolute.
    """
    from google.protobuf import text_format

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc}") from exc
    cfg = _monitoring_config_class()()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise ValueError(f"{p}: not a valid MonitoringConfig text proto: {exc}") from exc
    if not cfg.prometheus_config.enable:
        return None
    url = cfg.prometheus_config.path or DEFAULT_PATH
    if not url.startswith("/") or url.startswith("/v1/"):
        raise ValueError(f"{p}: prometheus_config.path must start with '/' and not be under /v1/, got {url!r}")
    return url


class Metrics:
    """The server's metrics, in a registry of their own (not prometheus_client's global one).

    Args:
        registry: the models, read at every scrape for their load state.
    """

    def __init__(self, registry: ModelRegistry):
        import prometheus_client as pc

        # _created series double the output and TF Serving has none
        pc.disable_created_metrics()
        self.models = registry
        self.prom = pc.CollectorRegistry(auto_describe=True)
        self.request_count = pc.Counter(
            ":tensorflow:serving:request_count",
            "Requests answered, by model, API, entrypoint and status (gRPC code name).",
            ["model_name", "API", "entrypoint", "status"], registry=self.prom,
        )
        self.request_latency = pc.Histogram(
            ":tensorflow:serving:request_latency",
            "Time from request to answer, in microseconds.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=self.prom,
        )
        self.in_flight = pc.Gauge(
            ":rnnkit:serving:requests_in_flight",
            "Requests accepted and not yet answered, by entrypoint.",
            ["entrypoint"], registry=self.prom,
        )
        self.prom.register(_ModelStateCollector(registry))

    def label(self, model_name: str) -> str:
        """The model_name label: unknown names share one value, so clients cannot grow the
        number of series without bound."""
        return model_name if model_name in self.models.specs else "<unknown>"

    def observe(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """Count one answered request and its latency.

        Args:
            model_name: the model asked for.
            api: ``predict``, ``GetModelMetadata``, ``GetModelStatus``.
            entrypoint: ``REST`` or ``GRPC``.
            status: the canonical code name (``OK``, ``INVALID_ARGUMENT``, ...).
            seconds: time from request to answer.
        """
        name = self.label(model_name)
        self.request_count.labels(name, api, entrypoint, status).inc()
        self.request_latency.labels(name, api, entrypoint).observe(seconds * 1e6)

    def exposition(self) -> bytes:
        """Prometheus text format of every metric."""
        import prometheus_client as pc

        return pc.generate_latest(self.prom)


class _ModelStateCollector:
    """Model load state, read from the registry at scrape time (never stale)."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        available = GaugeMetricFamily(
            ":rnnkit:serving:model_available_versions",
            "Versions of the model serving requests now (0: requests to it fail).",
            labels=["model_name"],
        )
        state = GaugeMetricFamily(
            ":rnnkit:serving:model_version_state",
            "1 for each version's current state (LOADING, AVAILABLE, END); error=1 when its last load failed.",
            labels=["model_name", "version", "state", "error"],
        )
        attempts = CounterMetricFamily(
            ":rnnkit:serving:model_load_attempt_count",
            "Version load attempts, by model and outcome (OK or ERROR).",
            labels=["model_name", "status"],
        )
        for name in self.registry.model_names():
            try:
                items = self.registry.statuses(name)
            except Exception:  # noqa: BLE001 - NOT_FOUND: no versions on disk yet
                items = []
            available.add_metric([name], sum(1 for _, st in items if st.state == "AVAILABLE"))
            for v, st in items:
                state.add_metric([name, str(v), st.state, "1" if st.error_message else "0"], 1)
            for status in ("OK", "ERROR"):
                attempts.add_metric([name, status], self.registry.load_attempts.get((name, status), 0))
        yield available
        yield state
        yield attempts
