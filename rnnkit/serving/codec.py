"""Request/response encoding: TF Serving's REST JSON and gRPC TensorProtos <-> numpy.

Every check here exists to turn a bad request into an INVALID_ARGUMENT naming the input and
the problem, instead of an opaque TensorFlow error (or a crash) deep in the model call.
JSON follows TF Serving's REST API: row format (``instances``) and columnar format
(``inputs``), ``{"b64": "..."}`` for binary DT_STRING values, ``{"predictions": ...}`` /
``{"outputs": ...}`` answers, string outputs whose name ends in ``_bytes`` sent as b64.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from rnnkit.serving.errors import invalid

# Request fields TF Serving's predict API knows.
_PREDICT_FIELDS = {"signature_name", "instances", "inputs"}


def dtype_name(enum: int) -> str:
    """``DT_FLOAT``-style name of a DataType enum."""
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DT_<{enum}>"


def _np_dtype(enum: int):
    import tensorflow as tf

    dt = tf.dtypes.as_dtype(enum)
    return object if dt == tf.string else dt.as_numpy_dtype


def _is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and "b64" in v


def _shape_of(value: Any, name: str, what: str) -> tuple[list[int], list[Any]]:
    """Shape and flat leaves of a nested JSON list; rejects ragged nesting."""
    shape: list[int] = []
    x = value
    while isinstance(x, list):
        shape.append(len(x))
        if not x:
            break
        x = x[0]
    flat: list[Any] = []

    def rec(v: Any, depth: int) -> None:
        if depth < len(shape):
            if not isinstance(v, list) or len(v) != shape[depth]:
                raise invalid(
                    f"{what} for input {name!r}: ragged nesting, expected a list of {shape[depth]} at "
                    f"depth {depth} (every row must have the same shape)"
                )
            for e in v:
                rec(e, depth + 1)
        else:
            if isinstance(v, list):
                raise invalid(f"{what} for input {name!r}: ragged nesting, lists nested to different depths")
            flat.append(v)

    rec(value, 0)
    return shape, flat


def _string_leaf(v: Any, name: str) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if _is_b64(v):
        s = v["b64"]
        if not isinstance(s, str):
            raise invalid(f"input {name!r}: the 'b64' value must be a string")
        try:
            return base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid(f"input {name!r}: invalid base64 in {{'b64': ...}} value: {exc}") from None
    kind = "an object" if isinstance(v, dict) else type(v).__name__
    raise invalid(f"input {name!r} is a string tensor (DT_STRING); got {kind} (use a JSON string or {{\"b64\": ...}})")


def json_to_array(value: Any, name: str, dtype_enum: int, what: str = "values") -> np.ndarray:
    """Convert a JSON value (nested lists of scalars) to an array of the signature dtype.

    Args:
        value: the decoded JSON value.
        name: the input name (for messages).
        dtype_enum: the signature's DataType enum for the input.
        what: how to call the value in messages ("instances", "inputs").
    """
    target = _np_dtype(dtype_enum)
    if target is object:
        if isinstance(value, list) and value and all(type(v) is str for v in value):
            # the common case, a batch of plain strings: no nesting walk, no per-leaf checks
            out = np.empty(len(value), dtype=object)
            out[:] = [v.encode("utf-8") for v in value]
            return out
        shape, flat = _shape_of(value, name, what)
        out = np.empty(len(flat), dtype=object)
        for i, v in enumerate(flat):
            out[i] = _string_leaf(v, name)
        return out.reshape(shape)
    if isinstance(value, dict) or (isinstance(value, list) and value and _contains_object(value)):
        raise invalid(
            f"input {name!r} expects {dtype_name(dtype_enum)} numbers; got a JSON object "
            "({\"b64\": ...} is only for string inputs)"
        )
    try:
        arr = np.asarray(value)
    except ValueError:
        _shape_of(value, name, what)  # raises the ragged message
        raise invalid(f"input {name!r}: cannot read {what} as a numeric array") from None
    if arr.dtype.kind == "U":
        raise invalid(f"input {name!r} expects {dtype_name(dtype_enum)} numbers; got strings")
    if arr.dtype.kind == "O":
        _shape_of(value, name, what)  # ragged nesting gets its own message
        raise invalid(f"input {name!r} expects {dtype_name(dtype_enum)} numbers; got non-numeric values (null, objects or huge integers)")
    target_np = np.dtype(target)
    if target_np.kind == "b":
        if arr.dtype.kind == "b":
            return arr
        if arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
            return arr.astype(bool)
        raise invalid(f"input {name!r} expects DT_BOOL (true/false); got {arr.dtype.name} values")
    if arr.dtype.kind == "b":
        raise invalid(f"input {name!r} expects {dtype_name(dtype_enum)}; got booleans")
    if target_np.kind in "iu":
        if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
            raise invalid(f"input {name!r} expects integers ({dtype_name(dtype_enum)}); got non-integer numbers")
        info = np.iinfo(target_np)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise invalid(f"input {name!r}: value out of range for {dtype_name(dtype_enum)}")
    return arr.astype(target_np)


def _contains_object(value: list) -> bool:
    # Only walk down the first elements: enough to catch [{"b64":..}, ...] cheaply; a dict
    # hidden elsewhere makes numpy build an object array, which is rejected below.
    x: Any = value
    while isinstance(x, list) and x:
        x = x[0]
    return isinstance(x, dict)


def check_array(arr: np.ndarray, name: str, info) -> np.ndarray:
    """Check an input array's shape against the signature's TensorInfo (rank, fixed dims, empty batch)."""
    ts = info.tensor_shape
    if not ts.unknown_rank:
        want = [d.size for d in ts.dim]
        shape_txt = "[" + ", ".join("?" if s < 0 else str(s) for s in want) + "]"
        if arr.ndim != len(want) or any(w >= 0 and w != g for w, g in zip(want, arr.shape)):
            raise invalid(
                f"input {name!r} has shape {list(arr.shape)} but the signature expects {shape_txt}"
            )
        if want and want[0] < 0 and arr.shape[0] == 0:
            raise invalid(f"input {name!r} is an empty batch (0 rows)")
    if arr.size == 0 and arr.ndim >= 1 and arr.shape[0] == 0:
        raise invalid(f"input {name!r} is an empty batch (0 rows)")
    return arr


def decode_rest_predict(body: Any, sigdef, signature_name: str) -> tuple[dict[str, np.ndarray], str]:
    """Turn a REST predict body into named input arrays.

    Args:
        body: the decoded JSON body.
        sigdef: the SignatureDef proto being called.
        signature_name: its key (for messages).

    Returns:
        (inputs, fmt) where fmt is ``"row"`` (instances) or ``"columnar"`` (inputs).
    """
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object with 'instances' or 'inputs'")
    unknown = sorted(set(body) - _PREDICT_FIELDS)
    if unknown:
        raise invalid(f"unknown request field(s) {unknown}; expected 'instances' or 'inputs' (and optional 'signature_name')")
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows and has_cols:
        raise invalid("request has both 'instances' and 'inputs'; use only one (row or columnar format)")
    if not has_rows and not has_cols:
        raise invalid("request needs 'instances' (row format) or 'inputs' (columnar format)")
    names = list(sigdef.inputs)
    out: dict[str, np.ndarray] = {}
    if has_rows:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise invalid("'instances' must be a JSON list (one element per example)")
        if not rows:
            raise invalid("'instances' is an empty list: empty batch")
        named = [isinstance(r, dict) and not _is_b64(r) for r in rows]
        if any(named) and not all(named):
            raise invalid("'instances' mixes objects and plain values; use one form for every instance")
        if all(named):
            for i, r in enumerate(rows):
                _check_names(set(r), names, signature_name, f"instance {i}")
            columns = {n: [r[n] for r in rows] for n in names}
        elif len(names) == 1:
            columns = {names[0]: rows}
        else:
            raise invalid(
                f"signature {signature_name!r} has inputs {sorted(names)}: each instance must be an "
                "object naming them"
            )
        for n, col in columns.items():
            out[n] = check_array(json_to_array(col, n, sigdef.inputs[n].dtype, "instances"), n, sigdef.inputs[n])
        return out, "row"
    cols = body["inputs"]
    if isinstance(cols, dict) and not _is_b64(cols):
        _check_names(set(cols), names, signature_name, "'inputs'")
        for n in names:
            out[n] = check_array(json_to_array(cols[n], n, sigdef.inputs[n].dtype, "inputs"), n, sigdef.inputs[n])
    elif len(names) == 1:
        n = names[0]
        out[n] = check_array(json_to_array(cols, n, sigdef.inputs[n].dtype, "inputs"), n, sigdef.inputs[n])
    else:
        raise invalid(f"signature {signature_name!r} has inputs {sorted(names)}: 'inputs' must be an object naming them")
    return out, "columnar"


def _check_names(given: set[str], names: list[str], signature_name: str, where: str) -> None:
    missing = sorted(set(names) - given)
    extra = sorted(given - set(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise invalid(f"{where}: {' and '.join(parts)}; signature {signature_name!r} takes {sorted(names)}")


def _json_value(arr: np.ndarray, name: str) -> Any:
    if arr.dtype == object or arr.dtype.kind == "S":
        as_b64 = name.endswith("_bytes")
        flat = arr.reshape(-1)
        conv = np.empty(len(flat), dtype=object)
        for i, b in enumerate(flat):
            if isinstance(b, str):
                conv[i] = b
                continue
            if not as_b64:
                try:
                    conv[i] = b.decode("utf-8")
                    continue
                except UnicodeDecodeError:
                    pass  # not text: fall through to b64 so the JSON stays valid
            conv[i] = {"b64": base64.b64encode(b).decode("ascii")}
        return conv.reshape(arr.shape).tolist()
    return arr.tolist()


def has_non_finite(outputs: dict[str, np.ndarray]) -> bool:
    """Whether any floating-point output holds NaN or +-Infinity (JSON writers differ on those)."""
    return any(a.dtype.kind in "fc" and a.size and not np.isfinite(a).all() for a in outputs.values())


def encode_rest_predict(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    """Build TF Serving's REST predict answer from output arrays (row or columnar format)."""
    if fmt == "columnar":
        if len(outputs) == 1:
            ((name, arr),) = outputs.items()
            return {"outputs": _json_value(arr, name)}
        return {"outputs": {k: _json_value(v, k) for k, v in outputs.items()}}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    batch = {s for s in sizes.values()}
    if len(batch) != 1 or None in batch:
        raise invalid(
            f"outputs have inconsistent batch sizes {sizes}; the row format needs one batch "
            "dimension, use the columnar format ('inputs')"
        )
    if len(outputs) == 1:
        ((name, arr),) = outputs.items()
        return {"predictions": _json_value(arr, name)}
    cols = {k: _json_value(v, k) for k, v in outputs.items()}
    n = batch.pop()
    return {"predictions": [{k: cols[k][i] for k in cols} for i in range(n)]}


# DataType enums whose TensorProto ``tensor_content`` is the raw little-endian array bytes.
_RAW_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
               9: np.int64, 10: np.bool_, 17: np.uint16}
_DT_STRING = 7


def _proto_shape(proto) -> tuple[int, ...] | None:
    if proto.tensor_shape.unknown_rank:
        return None
    return tuple(d.size for d in proto.tensor_shape.dim)


def _fast_proto_to_array(proto) -> np.ndarray | None:
    """The common, unambiguous TensorProto layouts decoded directly (what tf.make_ndarray
    does for them, minus its Python overhead); None for anything else."""
    shape = _proto_shape(proto)
    if shape is None or any(d < 0 for d in shape):
        return None
    n = int(np.prod(shape)) if shape else 1
    if proto.dtype == _DT_STRING:
        vals = proto.string_val
        if len(vals) != n or n == 0:
            return None  # empty or broadcast (one value for many): the general path
        out = np.empty(n, dtype=object)
        out[:] = list(vals)
        return out.reshape(shape)
    np_dt = _RAW_DTYPES.get(proto.dtype)
    content = proto.tensor_content
    if np_dt is None or not content or len(content) != n * np.dtype(np_dt).itemsize:
        return None
    return np.frombuffer(content, dtype=np_dt).reshape(shape)


def tensor_proto_to_array(proto, name: str, info) -> np.ndarray:
    """Decode a gRPC input TensorProto, requiring the signature's exact dtype (as TF Serving does)."""
    import tensorflow as tf

    if proto.dtype != info.dtype:
        raise invalid(
            f"input {name!r} expects {dtype_name(info.dtype)} but the request sent {dtype_name(proto.dtype)}"
        )
    arr = _fast_proto_to_array(proto)
    if arr is None:
        try:
            arr = tf.make_ndarray(proto)
        except Exception as exc:  # noqa: BLE001 - malformed protos raise TypeError/ValueError from numpy
            raise invalid(f"input {name!r}: malformed TensorProto: {exc}") from None
    return check_array(arr, name, info)


def array_to_tensor_proto(arr: np.ndarray, dtype_enum: int):
    """Encode an output array as a TensorProto of the given dtype (strings in ``string_val``,
    numbers as raw ``tensor_content``, as TF Serving writes them)."""
    from tensorflow.core.framework import tensor_pb2

    if dtype_enum == _DT_STRING and arr.dtype == object:
        flat = arr.reshape(-1).tolist()
        if all(type(b) is bytes for b in flat):
            proto = tensor_pb2.TensorProto(dtype=dtype_enum)
            for d in arr.shape:
                proto.tensor_shape.dim.add().size = d
            proto.string_val.extend(flat)
            return proto
    np_dt = _RAW_DTYPES.get(dtype_enum)
    if np_dt is not None and arr.dtype == np_dt:
        proto = tensor_pb2.TensorProto(dtype=dtype_enum, tensor_content=np.ascontiguousarray(arr).tobytes())
        for d in arr.shape:
            proto.tensor_shape.dim.add().size = d
        return proto
    import tensorflow as tf

    return tf.make_tensor_proto(arr, dtype=tf.dtypes.as_dtype(dtype_enum))
