"""benchmarks/memory_horizon.py: the tasks' targets, the table, and a small end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("memory_horizon",
                                                  ROOT / "benchmarks" / "memory_horizon.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["memory_horizon"] = module
    spec.loader.exec_module(module)
    return module


mh = _load()


@pytest.mark.parametrize("length", [2, 3, 10, 101, 400])
def test_adding_targets(length):
    rng = np.random.default_rng(length)
    x, y = mh.adding_batch(rng, 500, length)
    assert x.shape == (500, length, 2) and y.shape == (500, 1)
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert set(np.unique(marks)) <= {0.0, 1.0}
    half = length // 2
    # Exactly one marker in each half; the target is the sum of the two marked values.
    assert (marks[:, :half].sum(1) == 1).all() and (marks[:, half:].sum(1) == 1).all()
    np.testing.assert_allclose(y[:, 0], (values * marks).sum(1), rtol=1e-6)
    # Markers land everywhere in their half (not only at fixed places).
    if 10 <= length <= 101:
        first = marks[:, :half].argmax(1)
        assert len(np.unique(first)) == half


def test_adding_trivial_answer_scores_one_sixth():
    _, y = mh.adding_batch(np.random.default_rng(0), 200_000, 20)
    assert abs(float(np.mean((y - 1.0) ** 2)) - mh.TRIVIAL_ADDING_MSE) < 0.002
    assert abs(mh.TRIVIAL_ADDING_MSE - 0.1667) < 1e-4


@pytest.mark.parametrize("length", [10, 11, 50])
def test_copy_targets(length):
    s, k = mh.COPY_SYMBOLS, mh.COPY_ALPHABET
    x, y = mh.copy_batch(np.random.default_rng(length), 300, length)
    assert x.shape == (300, length, k + 1) and y.shape == (300, s)
    assert y.min() >= 0 and y.max() < k and len(np.unique(y)) == k
    # The first S steps show the target symbols, one-hot, with no recall marker.
    np.testing.assert_array_equal(x[:, :s, :k].argmax(-1), y)
    np.testing.assert_array_equal(x[:, :s].sum(-1), np.ones((300, s)))
    # Blanks between, then the recall marker alone on the last S steps.
    assert not x[:, s:length - s].any()
    assert (x[:, length - s:, k] == 1).all() and not x[:, length - s:, :k].any()
    assert not x[:, :length - s, k].any()


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        mh.adding_batch(np.random.default_rng(0), 4, 1)
    with pytest.raises(ValueError, match=f"at least {2 * mh.COPY_SYMBOLS}"):
        mh.copy_batch(np.random.default_rng(0), 4, 2 * mh.COPY_SYMBOLS - 1)
    with pytest.raises(SystemExit):
        mh.parse_args(["--lengths", "5"])
    with pytest.raises(SystemExit):
        mh.parse_args(["--configs", "tanh,elman2"])


def test_solved_thresholds():
    assert mh.solved("adding", 0.01) and not mh.solved("adding", 0.0101)
    assert mh.solved("copy", 0.99) and not mh.solved("copy", 0.989)


def test_table_marks_solved_failed_and_skipped():
    cells = [
        mh.Cell("adding", "tanh", 10, "solved", metric=0.004, steps=800, seconds=3.2),
        mh.Cell("adding", "tanh", 25, "failed", metric=0.161, steps=20000, seconds=75.0),
        mh.Cell("adding", "tanh", 50, "skipped", note="failed at T=25"),
    ]
    table = mh.table_markdown(cells, [10, 25, 50])
    row = [line for line in table.splitlines() if line.startswith("| tanh")][0]
    assert row == ("| tanh | **0.004** (800 st, 3 s) | 0.161 (20000 st, 75 s) | skip | 10 |")


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path):
    """Every configuration and task through training, gradient flow, table and figures."""
    out = tmp_path / "mh"
    assert mh.main(["--quick", "--lengths", "10,25",
                    "--output", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    cells = result["cells"]
    assert len(cells) == len(mh.TASKS) * len(mh.CONFIGS) * 2
    ran = [c for c in cells if c["status"] != "skipped"]
    assert {(c["task"], c["config"]) for c in ran if c["length"] == 10} == {
        (t, c) for t in mh.TASKS for c in mh.CONFIGS}
    for c in ran:
        assert c["steps"] > 0 and c["curve"][0][0] == 0 and np.isfinite(c["metric"])
        assert (c["flow_init"] is not None) == (c["config"] in mh.ELMAN_CONFIGS)
        if c["flow_init"]:
            assert c["flow_init"]["max_distance"] == c["length"] - 1
    # Something learns within the quick budget: at T=10 the copy task is solvable by tanh
    # or relu (both reach >= 0.99 in a few hundred steps), far above chance.
    best_copy = max(c["metric"] for c in ran if c["task"] == "copy" and c["length"] == 10)
    assert best_copy > 0.5
    for name in ("table.md", "curves_adding.png", "curves_copy.png",
                 "gradient_flow_adding.png", "gradient_flow_copy.png"):
        assert (out / name).stat().st_size > 0
    assert "| irnn |" in (out / "table.md").read_text()
