"""rnnkit.serving's request/response codecs: the fast paths give what the general ones give.

The server decodes gRPC TensorProtos and REST JSON through shortcuts for the common layouts
(raw ``tensor_content``, ``string_val``, a flat list of strings) and writes JSON with orjson
when it can; these tests hold each shortcut to TensorFlow's own converters and the standard
library's JSON.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from rnnkit.serving import codec, rest
from rnnkit.serving.errors import ServingError

ARRAYS = [
    np.array([b"a", b"", b"\xff\x00 binary", "caf\u00e9".encode()], dtype=object),
    np.array([[b"x", b"y"], [b"z", b"w"]], dtype=object),
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.array([[1.5, -2.25]], np.float64),
    np.arange(5, dtype=np.int64) - 2,
    np.array([-7, 3], np.int32),
    np.array([[0, 255]], np.uint8),
    np.array([True, False, True]),
    np.float32(3.5) * np.ones((), np.float32),
    np.zeros((2, 0), np.float32),
    np.array([1.0, 2.0], np.float16),
]


def _tf_dtype(a: np.ndarray):
    return tf.string if a.dtype == object else tf.as_dtype(a.dtype)


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_tensor_proto_round_trip_matches_tensorflow(arr):
    dt = _tf_dtype(arr)
    # what a client sends (tf.make_tensor_proto) decodes to what tf.make_ndarray reads
    proto = tf.make_tensor_proto(arr, dtype=dt)

    class Info:  # the TensorInfo fields the decoder reads: the signature's dtype and shape
        dtype = dt.as_datatype_enum
        tensor_shape = tf.TensorShape(arr.shape).as_proto()

    got = codec.tensor_proto_to_array(proto, "t", Info)
    want = tf.make_ndarray(proto)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert (got == want).all()
    # what the server answers reads back (tf.make_ndarray, as clients do) as the array itself
    back = tf.make_ndarray(codec.array_to_tensor_proto(arr, dt.as_datatype_enum))
    assert back.dtype == (object if arr.dtype == object else arr.dtype) and back.shape == arr.shape
    assert (back == arr).all()


def test_broadcast_and_malformed_protos_take_the_general_path():
    class Info:
        dtype = tf.float32.as_datatype_enum
        tensor_shape = tf.TensorShape([None]).as_proto()

    one_for_three = tf.make_tensor_proto(2.0, dtype=tf.float32, shape=[3])  # float_val [2.0], shape [3]
    np.testing.assert_array_equal(codec.tensor_proto_to_array(one_for_three, "x", Info), [2.0, 2.0, 2.0])
    bad = tf.make_tensor_proto(np.ones(3, np.float32))
    bad.tensor_content = bad.tensor_content[:-1]  # 11 bytes for 3 floats
    with pytest.raises(ServingError, match="malformed TensorProto"):
        codec.tensor_proto_to_array(bad, "x", Info)


def test_string_batch_fast_path_matches_general_path():
    vals = ["plain", "", "caf\u00e9 \u2013 \U0001f600"]
    fast = codec.json_to_array(vals, "text", tf.string.as_datatype_enum)
    general = codec.json_to_array([vals], "text", tf.string.as_datatype_enum)[0]  # nested: the general path
    assert fast.dtype == object and fast.tolist() == general.tolist() == [v.encode() for v in vals]
    with pytest.raises(ServingError, match="is a string tensor"):
        codec.json_to_array(["ok", 3], "text", tf.string.as_datatype_enum)


def test_json_reading_and_writing_agree_with_the_standard_library():
    body = b'{"inputs": {"x": [[1.5, -2, 1e-3]], "k": [3]}, "signature_name": "caf\\u00e9"}'
    assert rest.loads_json(body) == json.loads(body)
    # NaN / Infinity literals: orjson refuses them, json reads them
    assert math.isnan(rest.loads_json(b"[NaN]")[0]) and rest.loads_json(b"[Infinity]") == [math.inf]
    # an integer past 64 bits is a number either way (orjson, like TF Serving's RapidJSON,
    # reads it as the nearest double); the codec then rejects it for integer inputs
    assert float(rest.loads_json(b"[123456789012345678901234567890]")[0]) == 1.2345678901234568e29
    for bad in (b'{"instances": [', b"\xff\xfe", b""):
        with pytest.raises(ServingError, match="malformed JSON"):
            rest.loads_json(bad)
    out = {"outputs": {"p": [0.1, 2.5e-8, -3.0], "label": ["caf\u00e9"], "n": [1, 2]}}
    assert json.loads(rest.dumps_json(out)) == out
    # non-finite floats are written as literals, as TF Serving does, not as null
    outputs = {"p": np.array([np.nan, 1.0], np.float32)}
    assert codec.has_non_finite(outputs) and not codec.has_non_finite({"p": np.ones(2, np.float32)})
    text = rest.dumps_json(codec.encode_rest_predict(outputs, "columnar"), allow_orjson=False)
    assert text == b'{"outputs":[NaN,1.0]}'
