"""Speed of rnnkit.SimpleRecurrentLayer against keras.layers.SimpleRNN (same model, same weights).

For each benchmarked shape, both layers sit in the same small model
(``Input(T, D) -> RNN(H) -> Dense(1)``), get identical weights, and are timed
alternately (round-robin, several rounds) in one process, so machine load hits both alike.
Training = one compiled step (forward, loss, hand-written or autodiff backward, Adam update);
inference = one compiled forward call. Reported: median ms per step over the rounds, the
speed-up (median over rounds of Keras time / rnnkit time within the round, with its min-max),
the achieved GFLOP/s of the recurrent layer's arithmetic (training counts forward +
backward = 3x the forward matmul FLOPs), and the spread of rnnkit's per-round times.

Run (on a shared machine, queue behind other heavy jobs):

    .venv/bin/python benchmarks/layer_speed.py

Options: ``--quick`` (only the two headline shapes), ``--cases 0,3`` (a subset),
``--rounds N``, ``--budget SECONDS`` (timed seconds per layer and shape), ``--json PATH``
(also write the table as JSON, atomically), ``--layer-option NAME=VALUE`` (repeatable: a
constructor argument of rnnkit's layer, e.g. ``jit_compile=False`` or ``batch_slices=1``;
the value is read as a Python literal, else kept as a string).
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import tensorflow as tf

from rnnkit import SimpleRecurrentLayer
from rnnkit.atomic import atomic_write_json


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration."""

    mode: str  # "train" or "infer"
    batch: int
    steps: int
    features: int
    units: int
    masked: bool = False
    return_sequences: bool = False
    dynamic_time: bool = False  # model built with Input((None, D)): time axis unknown

    @property
    def label(self) -> str:
        extra = (" masked" if self.masked else "") + (" seq" if self.return_sequences else "")
        extra += " T:dyn" if self.dynamic_time else ""
        return (f"{self.mode:5s} B={self.batch:<3d} T={self.steps:<4d} D={self.features:<4d} "
                f"H={self.units:<4d}{extra}")

    @property
    def flops(self) -> float:
        """Matmul FLOPs of the recurrent layer for one step of this case."""
        forward = 2.0 * self.batch * self.steps * self.units * (self.features + self.units)
        return 3.0 * forward if self.mode == "train" else forward


CASES = [
    Case("train", 64, 200, 128, 128),
    Case("infer", 1, 200, 128, 128),
    Case("train", 64, 20, 128, 128),
    Case("train", 64, 200, 128, 128, masked=True),
    Case("train", 64, 200, 128, 128, masked=True, dynamic_time=True),
    Case("train", 32, 100, 128, 512),
    Case("train", 64, 200, 128, 128, return_sequences=True),
    Case("infer", 64, 200, 128, 128),
    Case("infer", 1, 20, 128, 128),
    Case("infer", 1, 200, 128, 128, dynamic_time=True),
]
QUICK_CASES = CASES[:2]


def build_model(layer_cls: type, case: Case, **layer_options) -> keras.Model:
    """``Input -> [Masking] -> layer -> Dense(1)`` for ``case``."""
    steps = None if case.dynamic_time else case.steps
    inputs = keras.Input((steps, case.features), batch_size=case.batch)
    x = keras.layers.Masking(0.0)(inputs) if case.masked else inputs
    x = layer_cls(case.units, return_sequences=case.return_sequences, **layer_options)(x)
    outputs = keras.layers.Dense(1)(x)
    return keras.Model(inputs, outputs)


def make_data(case: Case, rng: np.random.Generator) -> tuple[tf.Tensor, tf.Tensor]:
    x = rng.normal(size=(case.batch, case.steps, case.features)).astype("float32")
    if case.masked:  # right-padded, lengths uniform in [T/4, T]
        lengths = rng.integers(case.steps // 4, case.steps + 1, size=case.batch)
        x[np.arange(case.steps)[None, :] >= lengths[:, None]] = 0.0
    y_shape = (case.batch, case.steps, 1) if case.return_sequences else (case.batch, 1)
    y = rng.normal(size=y_shape).astype("float32")
    return tf.constant(x), tf.constant(y)


def make_step(model: keras.Model, case: Case):
    """A compiled function running one training step (or one inference call)."""
    # A shape-generic signature for dynamic_time cases, as Keras's fit gets after it has
    # seen several sequence lengths.
    sig = None
    if case.dynamic_time:
        sig = [tf.TensorSpec((case.batch, None, case.features), tf.float32),
               tf.TensorSpec(None, tf.float32)]
    if case.mode == "infer":
        return tf.function(lambda x, y: model(x, training=False), input_signature=sig)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)

    @tf.function(input_signature=sig)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def time_calls(fn, x, y, calls: int) -> float:
    """Milliseconds per call over ``calls`` back-to-back calls (result fetched each time)."""
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(x, y)
    np.asarray(out)
    return (time.perf_counter() - start) * 1e3 / calls


def bench_case(case: Case, rounds: int, budget_s: float,
               layer_options: dict | None = None) -> dict:
    """Time both layers on ``case``, alternating, and return the medians.

    Args:
        case: The shape and mode to time.
        rounds: Alternating rounds (each times both layers back to back).
        budget_s: Timed seconds per layer over all rounds (at least 3 calls a round).
        layer_options: Extra constructor arguments of rnnkit's layer.
    """
    rng = np.random.default_rng(0)
    x, y = make_data(case, rng)
    impls = {}
    for name, cls in (("rnnkit", SimpleRecurrentLayer), ("keras", keras.layers.SimpleRNN)):
        keras.utils.set_random_seed(1)
        options = (layer_options or {}) if name == "rnnkit" else {}
        impls[name] = build_model(cls, case, **options)
    impls["keras"].set_weights(impls["rnnkit"].get_weights())
    steps = {name: make_step(model, case) for name, model in impls.items()}
    # Warm up (traces, XLA compiles), then size the calls per round to ~budget_s.
    per_call = {}
    for name, fn in steps.items():
        time_calls(fn, x, y, 2)
        per_call[name] = time_calls(fn, x, y, 3)
    calls = max(3, int(budget_s * 1e3 / max(per_call.values()) / rounds))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            samples[name].append(time_calls(fn, x, y, calls))
    ms = {name: statistics.median(values) for name, values in samples.items()}
    # Each round times both layers back to back, so a per-round ratio sees (nearly) the same
    # machine load on both sides; its median is robust to load drifting between rounds.
    ratios = [k / r for k, r in zip(samples["keras"], samples["rnnkit"])]
    return {
        "case": case.label,
        "rnnkit_ms": ms["rnnkit"],
        "keras_ms": ms["keras"],
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "rnnkit_gflops": case.flops / ms["rnnkit"] / 1e6,
        "keras_gflops": case.flops / ms["keras"] / 1e6,
        "spread_pct": 100.0 * (max(samples["rnnkit"]) - min(samples["rnnkit"])) / ms["rnnkit"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two headline shapes")
    parser.add_argument("--cases", type=str, default=None,
                        help="comma-separated case numbers to run (0-based; default all)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per shape")
    parser.add_argument("--budget", type=float, default=6.0,
                        help="seconds of timed calls per layer and shape")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--layer-option", action="append", default=[], metavar="NAME=VALUE",
                        help="constructor argument of rnnkit's layer (repeatable), "
                             "e.g. jit_compile=False")
    args = parser.parse_args(argv)
    layer_options = {}
    for item in args.layer_option:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"--layer-option: expected NAME=VALUE, got {item!r}")
        try:
            layer_options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            layer_options[name] = value
    try:
        SimpleRecurrentLayer(1, **layer_options)
    except (TypeError, ValueError) as exc:
        parser.error(f"--layer-option: {exc}")

    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        picked = [int(i) for i in args.cases.split(",")]
        bad = [i for i in picked if not 0 <= i < len(CASES)]
        if bad:
            parser.error(f"--cases: no case {bad}; there are {len(CASES)} (0..{len(CASES) - 1})")
        cases = [CASES[i] for i in picked]
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"devices: {[d.device_type for d in tf.config.list_physical_devices()]}, "
          f"{os.cpu_count()} CPUs"
          + (f", rnnkit layer options {layer_options}" if layer_options else ""))
    header = (f"{'case':44s} {'rnnkit ms':>10s} {'keras ms':>10s} {'speed-up':>9s} "
              f"{'(min-max)':>12s} {'rnnkit GF/s':>12s} {'keras GF/s':>11s} {'spread':>7s}")
    print(header)
    print("-" * len(header))
    results = []
    for case in cases:
        r = bench_case(case, args.rounds, args.budget, layer_options)
        results.append(r)
        print(f"{r['case']:44s} {r['rnnkit_ms']:10.2f} {r['keras_ms']:10.2f} "
              f"{r['speedup']:8.2f}x {r['speedup_min']:5.2f}-{r['speedup_max']:<5.2f}x "
              f"{r['rnnkit_gflops']:12.1f} {r['keras_gflops']:11.1f} "
              f"{r['spread_pct']:6.0f}%", flush=True)
    if args.json:
        for r in results:
            r["layer_options"] = layer_options
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
