"""Tests for rnnkit.warmup: TF Serving warmup records."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from rnnkit.warmup import WARMUP_FILENAME, read_warmup_requests, write_warmup_requests


def test_roundtrip_string_and_float(tmp_path):
    path = tmp_path / "assets.extra" / WARMUP_FILENAME
    reqs = [
        {"text": np.array(["a fine film", "dreadful — truly"])},
        {"audio": np.zeros((1, 16), np.float32), "rate": np.array([16000], np.int32)},
    ]
    write_warmup_requests(path, reqs, signature_name="serving_default", model_name="sentiment")
    assert path.is_file()
    # no temp files left behind
    assert [p.name for p in path.parent.iterdir()] == [WARMUP_FILENAME]
    logs = read_warmup_requests(path)
    assert len(logs) == 2
    r0 = logs[0].predict_log.request
    assert r0.model_spec.name == "sentiment"
    assert r0.model_spec.signature_name == "serving_default"
    text = tf.make_ndarray(r0.inputs["text"])
    assert [t.decode("utf-8") for t in text] == ["a fine film", "dreadful — truly"]
    r1 = logs[1].predict_log.request
    np.testing.assert_array_equal(tf.make_ndarray(r1.inputs["audio"]), np.zeros((1, 16)))
    assert r1.inputs["audio"].dtype == tf.float32.as_datatype_enum
    assert r1.inputs["rate"].dtype == tf.int32.as_datatype_enum


@pytest.mark.parametrize(
    "reqs, err",
    [
        ([], ValueError),
        ([{}], ValueError),
        ([{"x": np.float32(1.0)}], ValueError),  # unbatched scalar
        ([{"x": np.array([{"a": 1}], dtype=object)}], TypeError),
    ],
)
def test_rejects_bad_requests(tmp_path, reqs, err):
    path = tmp_path / WARMUP_FILENAME
    with pytest.raises(err):
        write_warmup_requests(path, reqs)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
