"""TF Serving warmup records: ``assets.extra/tf_serving_warmup_requests``.

TensorFlow Serving replays the requests in this file when it loads a model version, so the
first real request does not pay for graph tracing / kernel warm-up. The file is a TFRecord
of ``tensorflow.serving.PredictionLog`` protos; each record here holds one ``PredictLog``
whose ``PredictRequest`` names the model, the signature and the input tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: File name TF Serving looks for under ``<version>/assets.extra/``.
WARMUP_FILENAME = "tf_serving_warmup_requests"

# TF Serving reads at most this many warmup records (kMaxNumRecordsToRead); more are ignored,
# so refusing them early keeps the file honest.
MAX_WARMUP_RECORDS = 1000


def _as_array(name: str, value: object) -> np.ndarray:
    """Convert one input value to an ndarray TF can turn into a TensorProto.

    Unicode strings become UTF-8 ``bytes`` (DT_STRING holds bytes); anything numpy cannot
    represent as a plain numeric/bool/bytes array is rejected with the input's name.
    """
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        arr = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(arr)
    elif arr.dtype.kind == "S":
        arr = arr.astype(object)
    elif arr.dtype.kind == "O":
        flat = arr.reshape(-1)
        if not all(isinstance(v, (bytes, str)) for v in flat):
            raise TypeError(
                f"warmup input {name!r}: object arrays must hold only str/bytes values"
            )
        arr = np.array(
            [v.encode("utf-8") if isinstance(v, str) else v for v in flat], dtype=object
        ).reshape(arr.shape)
    elif arr.dtype.kind not in "biuf?c":
        raise TypeError(f"warmup input {name!r}: unsupported dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(
            f"warmup input {name!r} is a scalar; serving inputs are batched, give shape [batch, ...]"
        )
    return arr


def build_prediction_logs(
    requests: Sequence[Mapping[str, np.ndarray]],
    signature_name: str = "serving_default",
    model_name: str = "model",
) -> list:
    """Build ``PredictionLog`` protos (one per request) without writing them.

    Args:
        requests: one mapping per request, input name -> batched array ([batch, ...]).
        signature_name: the SavedModel signature the requests target.
        model_name: the ``model_spec.name`` recorded in each request (TF Serving ignores
            it during warmup, but clients reading the file see it).

    Returns:
        A list of ``tensorflow_serving.apis.prediction_log_pb2.PredictionLog``.
    """
    # Imported lazily: TF import is heavy and the serving protos pull in TF anyway.
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if not requests:
        raise ValueError("write_warmup_requests: need at least one request")
    if len(requests) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"write_warmup_requests: {len(requests)} requests, TF Serving reads at most "
            f"{MAX_WARMUP_RECORDS}"
        )
    if not signature_name:
        raise ValueError("write_warmup_requests: signature_name must be non-empty")
    logs = []
    for i, req in enumerate(requests):
        if not isinstance(req, Mapping) or not req:
            raise ValueError(f"warmup request {i}: expected a non-empty dict of input name -> array")
        pr = predict_pb2.PredictRequest()
        pr.model_spec.name = model_name
        pr.model_spec.signature_name = signature_name
        for name, value in req.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"warmup request {i}: input names must be non-empty strings")
            arr = _as_array(name, value)
            if arr.dtype == object:
                proto = tf.make_tensor_proto(arr, dtype=tf.string)
            else:
                proto = tf.make_tensor_proto(arr)
            pr.inputs[name].CopyFrom(proto)
        logs.append(
            prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=pr))
        )
    return logs


def write_warmup_requests(
    path: Path,
    requests: list[dict[str, np.ndarray]],
    signature_name: str = "serving_default",
    model_name: str = "model",
) -> None:
    """Write TF Serving warmup records atomically.

    Args:
        path: destination file, normally ``<version>/assets.extra/tf_serving_warmup_requests``
            (parent directories are created).
        requests: one dict per request, input name -> batched numpy array ([batch, ...]);
            ``str`` values are stored UTF-8 encoded as DT_STRING.
        signature_name: signature every request targets (default ``serving_default``).
        model_name: model name recorded in each request's ``model_spec``.

    The records are written to a temporary file in the same directory and renamed into
    place, so a reader never sees a partial file.
    """
    import tensorflow as tf

    path = Path(path)
    logs = build_prediction_logs(requests, signature_name=signature_name, model_name=model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for log in logs:
                writer.write(log.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_warmup_requests(path: Path) -> list:
    """Read back the ``PredictionLog`` protos of a warmup file (for tests and tooling).

    Args:
        path: a ``tf_serving_warmup_requests`` TFRecord file.

    Returns:
        The list of ``PredictionLog`` protos in file order.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        logs.append(prediction_log_pb2.PredictionLog.FromString(raw))
    return logs
