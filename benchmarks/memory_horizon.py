"""How far back can a plain Elman network remember? The adding and copy tasks over T.

Two synthetic long-term-dependency tasks, each at sequence lengths T = 10, 25, 50, 100,
200, 400:

* **adding** (Hochreiter and Schmidhuber 1997, as set up by Le, Jaitly and Hinton 2015):
  two input channels, random values in [0, 1] and a marker that is 1 at exactly two steps,
  one in each half of the sequence; the target is the sum of the two marked values, read
  from the last state. Predicting the constant 1.0 scores a mean squared error of 1/6
  (about 0.167: the variance of the sum of two uniform values). Solved: test MSE <= 0.01.
* **copy** (a short version of the copy-memory task): the first ``COPY_SYMBOLS`` = 5 steps
  show symbols from an alphabet of 8 (one-hot), then blanks, and the last 5 steps carry a
  "recall" marker; at those steps the network must output the 5 symbols in order. Chance:
  1/8 per symbol. Solved: per-symbol test accuracy >= 0.99. The information has to cross
  T - 5 steps.

Configurations, all with ``UNITS`` = 64 units, Adam (learning rate 1e-3, gradients clipped
to a global norm of 1.0), batch 64, fresh random sequences every step, the same data stream
for every configuration, seeds fixed:

* ``tanh``, ``sigmoid``, ``relu``: :class:`rnnkit.SimpleRecurrentLayer` with its defaults
  (Glorot-uniform ``W_x``, orthogonal ``W_h``, zero bias);
* ``irnn``: ReLU with ``W_h`` = identity, ``W_x`` ~ N(0, 0.001^2) (Le et al. 2015);
* ``lstm``, ``gru``: ``keras.layers.LSTM`` / ``GRU`` as references (same units).

Budget per cell (task, configuration, T): at most ``--max-steps`` training steps and
``--max-seconds`` seconds of wall time (compilation included), whichever comes first; the
test metric (1,000 held-out sequences) is checked every ``--eval-every`` steps and the cell
stops as soon as it is solved. Once a configuration fails a task at some T, its longer T
are skipped (marked "skip" in the table; ``--no-skip`` runs them anyway).

For the Elman configurations, the gradient flow through time (``rnnkit.gradient_flow``) is
measured on 64 test sequences at initialisation and after training, for every cell.

Also, before training (and cheap: no training), the gradient flow at initialisation
against the spectral radius of ``W_h`` (``W_h`` = gain x orthogonal, or the identity) for
tanh, sigmoid and ReLU at T = 200 (``--sweep-only`` draws just that; ``--no-sweep`` skips it).

Outputs, under ``--output`` (default ``runs/memory_horizon``): ``results.json`` (every
cell: solved, final and best metric, steps, seconds, learning curve, gradient-flow
summaries; the sweep), ``table.md``, ``curves_<task>.png`` (learning curves, one panel per
T), ``gradient_flow_<task>.png`` (gradient norm against distance, at initialisation and
after training, at ``--flow-length``) and ``gradient_flow_sweep.png``.

``--clip-norm 0`` trains without gradient clipping (to see what clipping changes).

Run (queue behind other heavy jobs on a shared machine):

    .venv/bin/python benchmarks/memory_horizon.py
    .venv/bin/python benchmarks/memory_horizon.py --quick

``--quick`` runs T = 10 and 25 with a small budget (a smoke run of the whole pipeline, in
about two minutes). ``--tasks``, ``--configs`` and ``--lengths`` select a subset.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LENGTHS = (10, 25, 50, 100, 200, 400)
QUICK_LENGTHS = (10, 25)
TASKS = ("adding", "copy")
CONFIGS = ("tanh", "sigmoid", "relu", "irnn", "lstm", "gru")
ELMAN_CONFIGS = ("tanh", "sigmoid", "relu", "irnn")
UNITS = 64
BATCH = 64
LEARNING_RATE = 1e-3
CLIP_NORM = 1.0
TEST_SIZE = 1000
FLOW_SIZE = 64
COPY_SYMBOLS = 5
COPY_ALPHABET = 8
# Solved thresholds (see the module docstring).
ADDING_SOLVED_MSE = 0.01
COPY_SOLVED_ACCURACY = 0.99
TRIVIAL_ADDING_MSE = 1.0 / 6.0

DEFAULTS = {"max_steps": 20000, "max_seconds": 75.0, "eval_every": 200}
QUICK_DEFAULTS = {"max_steps": 1000, "max_seconds": 6.0, "eval_every": 50}


# --------------------------------------------------------------------------- tasks
def adding_batch(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """One batch of the adding problem: ``x (batch, length, 2)``, ``y (batch, 1)``.

    Channel 0 holds values uniform in [0, 1]; channel 1 marks one step in the first half
    and one in the second half (``length // 2`` splits them); ``y`` is the sum of the two
    marked values.

    Args:
        rng: the random generator (its state advances).
        batch: number of sequences.
        length: steps per sequence, at least 2.
    """
    if length < 2:
        raise ValueError(f"adding problem: the length must be at least 2, got {length}")
    values = rng.uniform(0.0, 1.0, size=(batch, length)).astype(np.float32)
    half = length // 2
    first = rng.integers(0, half, size=batch)
    second = rng.integers(half, length, size=batch)
    marks = np.zeros((batch, length), np.float32)
    rows = np.arange(batch)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    x = np.stack([values, marks], axis=-1)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return x, y


def copy_batch(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """One batch of the copy task: ``x (batch, length, alphabet + 1)``, ``y (batch, S)``.

    Steps ``0..S-1`` carry one-hot symbols, the last ``S`` steps carry the recall marker
    (the extra channel), the steps between are all zeros; ``y`` holds the ``S`` symbols
    (integers) to output at the last ``S`` steps, in order.

    Args:
        rng: the random generator (its state advances).
        batch: number of sequences.
        length: steps per sequence, at least ``2 * COPY_SYMBOLS``.
    """
    if length < 2 * COPY_SYMBOLS:
        raise ValueError(f"copy task: the length must be at least {2 * COPY_SYMBOLS} "
                         f"(symbols, then recall), got {length}")
    symbols = rng.integers(0, COPY_ALPHABET, size=(batch, COPY_SYMBOLS))
    x = np.zeros((batch, length, COPY_ALPHABET + 1), np.float32)
    rows = np.arange(batch)[:, None]
    x[rows, np.arange(COPY_SYMBOLS)[None, :], symbols] = 1.0
    x[:, length - COPY_SYMBOLS:, COPY_ALPHABET] = 1.0
    return x, symbols.astype(np.int32)


TASK_BATCH = {"adding": adding_batch, "copy": copy_batch}


def solved(task: str, metric: float) -> bool:
    """Whether a test metric solves the task (MSE for adding, accuracy for copy)."""
    if task == "adding":
        return metric <= ADDING_SOLVED_MSE
    return metric >= COPY_SOLVED_ACCURACY


# --------------------------------------------------------------------------- models
def build_model(task: str, config: str, length: int, seed: int):
    """The network of one cell: recurrent layer -> Dense head (last state or last S steps).

    Args:
        task: ``"adding"`` or ``"copy"``.
        config: one of :data:`CONFIGS`.
        length: the sequence length T.
        seed: seed of the initialisers.
    """
    import keras

    from rnnkit import SimpleRecurrentLayer

    keras.utils.set_random_seed(seed)
    features = 2 if task == "adding" else COPY_ALPHABET + 1
    per_step = task == "copy"
    if config in ("tanh", "sigmoid", "relu"):
        rnn = SimpleRecurrentLayer(UNITS, activation=config, return_sequences=per_step,
                                   name="rnn")
    elif config == "irnn":
        rnn = SimpleRecurrentLayer(
            UNITS, activation="relu", return_sequences=per_step, name="rnn",
            recurrent_initializer=keras.initializers.Identity(),
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001, seed=seed),
        )
    elif config == "lstm":
        rnn = keras.layers.LSTM(UNITS, return_sequences=per_step, name="rnn")
    elif config == "gru":
        rnn = keras.layers.GRU(UNITS, return_sequences=per_step, name="rnn")
    else:
        raise ValueError(f"unknown configuration {config!r}; choose from {CONFIGS}")
    inputs = keras.Input((length, features))
    h = rnn(inputs)
    if per_step:
        h = h[:, -COPY_SYMBOLS:, :]
        out = keras.layers.Dense(COPY_ALPHABET, name="head")(h)
    else:
        out = keras.layers.Dense(1, name="head")(h)
    return keras.Model(inputs, out, name=f"{task}_{config}_T{length}")


def loss_function(task: str):
    """The training loss of a task (mean over the batch; per symbol for copy)."""
    import keras

    if task == "adding":
        return keras.losses.MeanSquaredError()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# --------------------------------------------------------------------------- one cell
@dataclass
class Cell:
    """The outcome of training one configuration on one task at one length."""

    task: str
    config: str
    length: int
    status: str  # "solved", "failed", "skipped"
    metric: float | None = None  # final test metric (MSE or accuracy)
    best_metric: float | None = None
    steps: int = 0
    seconds: float = 0.0
    solved_at_step: int | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # step, s, metric
    flow_init: dict | None = None
    flow_trained: dict | None = None
    note: str = ""


def _flow(model, task, x, y, loss_fn):
    from rnnkit.gradient_flow import gradient_flow

    flow = gradient_flow(model, x, y, loss_fn=loss_fn)
    layer = flow.layers[0]
    return {
        "loss": flow.loss,
        "distance": layer.distance.tolist(),
        "grad_norm": layer.grad_norm.tolist(),
        **layer.summary(),
    }


def run_cell(task: str, config: str, length: int, seed: int, max_steps: int,
             max_seconds: float, eval_every: int, clip_norm: float = CLIP_NORM) -> Cell:
    """Train one cell until solved or out of budget; return its :class:`Cell`.

    Args:
        task: ``"adding"`` or ``"copy"``.
        config: one of :data:`CONFIGS`.
        length: the sequence length T.
        seed: the base seed (data and initialisation).
        max_steps: training steps at most.
        max_seconds: wall seconds at most (model building and compilation included).
        eval_every: steps between test evaluations.
        clip_norm: clip the gradients to this global norm (0: no clipping).
    """
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    task_id = TASKS.index(task)
    train_rng = np.random.default_rng([seed, task_id, length, 0])
    test_rng = np.random.default_rng([seed, task_id, length, 1])
    x_test, y_test = TASK_BATCH[task](test_rng, TEST_SIZE, length)
    model = build_model(task, config, length, seed)
    loss_fn = loss_function(task)
    optimizer = keras.optimizers.Adam(LEARNING_RATE, global_clipnorm=clip_norm or None)
    variables = model.trainable_variables

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function
    def test_metric(x, y):
        pred = model(x, training=False)
        if task == "adding":
            return tf.reduce_mean(tf.square(pred - y))
        hits = tf.equal(tf.argmax(pred, -1, output_type=tf.int32), y)
        return tf.reduce_mean(tf.cast(hits, tf.float32))

    elman = config in ELMAN_CONFIGS
    cell = Cell(task, config, length, status="failed")
    if elman:
        cell.flow_init = _flow(model, task, x_test[:FLOW_SIZE], y_test[:FLOW_SIZE], loss_fn)
    x_test_t, y_test_t = tf.constant(x_test), tf.constant(y_test)
    metric = float(test_metric(x_test_t, y_test_t))
    cell.curve.append((0, round(time.perf_counter() - started, 2), metric))
    best = metric
    step = 0
    # At least one step, even when building and compiling ate the time budget.
    while step < max_steps and (step == 0 or time.perf_counter() - started < max_seconds):
        x, y = TASK_BATCH[task](train_rng, BATCH, length)
        loss = float(train_step(tf.constant(x), tf.constant(y)))
        step += 1
        if step % eval_every == 0 or step == max_steps:
            metric = float(test_metric(x_test_t, y_test_t))
            elapsed = time.perf_counter() - started
            cell.curve.append((step, round(elapsed, 2), metric))
            if math.isfinite(metric):
                best = min(best, metric) if task == "adding" else max(best, metric)
            if not math.isfinite(loss) or not math.isfinite(metric):
                cell.note = "diverged (non-finite loss)"
                break
            if solved(task, metric):
                cell.status = "solved"
                cell.solved_at_step = step
                break
    if cell.curve[-1][0] != step:  # ran out of time between evaluations
        metric = float(test_metric(x_test_t, y_test_t))
        cell.curve.append((step, round(time.perf_counter() - started, 2), metric))
        best = min(best, metric) if task == "adding" else max(best, metric)
        if solved(task, metric):
            cell.status, cell.solved_at_step = "solved", step
    if not math.isfinite(metric) and not cell.note:
        cell.note = "diverged (non-finite test metric)"
    cell.metric, cell.best_metric, cell.steps = metric, best, step
    if elman:
        cell.flow_trained = _flow(model, task, x_test[:FLOW_SIZE], y_test[:FLOW_SIZE],
                                  loss_fn)
    cell.seconds = round(time.perf_counter() - started, 1)
    return cell


# --------------------------------------------------------------------------- outputs
def _fmt_cell(cell: Cell) -> str:
    if cell.status == "skipped":
        return "skip"
    metric = f"{cell.metric:.3f}" if cell.metric is not None and math.isfinite(cell.metric) \
        else "nan"
    mark = "**" if cell.status == "solved" else ""
    diverged = ", diverged" if cell.note.startswith("diverged") else ""
    return f"{mark}{metric}{mark} ({cell.steps} st, {cell.seconds:.0f} s{diverged})"


def table_markdown(cells: list[Cell], lengths: list[int]) -> str:
    """The results table: per task, one row per configuration, one column per T.

    A cell shows the final test metric (bold when solved), the training steps and the wall
    seconds; "skip" where a shorter T already failed. The last column is the longest T
    solved.
    """
    lines = []
    for task in dict.fromkeys(c.task for c in cells):
        what = ("test MSE (solved <= 0.01; predicting 1.0 scores 0.167)" if task == "adding"
                else "test accuracy per symbol (solved >= 0.99; chance 0.125)")
        lines.append(f"**{task}**: {what}\n")
        lines.append("| config | " + " | ".join(f"T={t}" for t in lengths)
                     + " | longest T solved |")
        lines.append("|---" * (len(lengths) + 2) + "|")
        for config in dict.fromkeys(c.config for c in cells if c.task == task):
            row = {c.length: c for c in cells if c.task == task and c.config == config}
            longest = max((t for t, c in row.items() if c.status == "solved"), default=None)
            lines.append(f"| {config} | " + " | ".join(
                _fmt_cell(row[t]) if t in row else "-" for t in lengths)
                + f" | {longest if longest else 'none'} |")
        lines.append("")
    return "\n".join(lines)


def _save(fig, path: Path) -> None:
    from rnnkit.reports import save_figure

    save_figure(fig, path, dpi=110)


COLORS = {"tanh": "C0", "sigmoid": "C1", "relu": "C2", "irnn": "C3", "lstm": "C4",
          "gru": "C5"}


def plot_curves(cells: list[Cell], task: str, lengths: list[int], path: Path) -> None:
    """Learning curves (test metric against training step), one panel per T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(lengths))
    rows = math.ceil(len(lengths) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, length in zip(axes.flat, lengths):
        for cell in cells:
            if cell.task != task or cell.length != length or not cell.curve:
                continue
            steps = [p[0] for p in cell.curve]
            values = [p[2] for p in cell.curve]
            ax.plot(steps, values, "-", color=COLORS.get(cell.config), lw=1.5,
                    label=cell.config + (" (solved)" if cell.status == "solved" else ""))
        if task == "adding":
            ax.set_yscale("log")
            ax.set_ylim(1e-3, 5.0)  # a diverged run would squash every other curve
            ax.axhline(ADDING_SOLVED_MSE, color="k", ls=":", lw=1)
            ax.axhline(TRIVIAL_ADDING_MSE, color="grey", ls="--", lw=1)
            ax.set_ylabel("test MSE")
        else:
            ax.axhline(COPY_SOLVED_ACCURACY, color="k", ls=":", lw=1)
            ax.axhline(1.0 / COPY_ALPHABET, color="grey", ls="--", lw=1)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("test accuracy")
        ax.set_title(f"{task}, T = {length}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(lengths):]:
        ax.axis("off")
    fig.suptitle(f"{task}: learning curves (dotted: solved threshold; dashed: "
                 f"{'predict 1.0' if task == 'adding' else 'chance'})")
    fig.tight_layout()
    _save(fig, path)


def plot_flow(cells: list[Cell], task: str, length: int, path: Path) -> bool:
    """Gradient norm against distance at initialisation (dashed) and trained (solid).

    One curve pair per Elman configuration, at ``length``, or at the longest T the
    configuration ran when it was skipped at ``length`` (the legend names the T).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = []
    for config in dict.fromkeys(c.config for c in cells if c.task == task and c.flow_init):
        ran = [c for c in cells if c.task == task and c.config == config and c.flow_init]
        at = [c for c in ran if c.length == length]
        chosen.append(at[0] if at else max(ran, key=lambda c: c.length))
    if not chosen:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for cell in chosen:
        for key, style, label in (("flow_init", "--", "init"), ("flow_trained", "-", "trained")):
            flow = getattr(cell, key)
            if not flow:
                continue
            d = np.asarray(flow["distance"])
            g = np.asarray(flow["grad_norm"])
            keep = g > 0
            ax.semilogy(d[keep], g[keep], style, color=COLORS[cell.config], lw=1.5,
                        label=f"{cell.config} T={cell.length} {label}: rho(W_h)={flow['spectral_radius']:.2f}, "
                              f"sat={flow['saturation']:.0%}")
    ax.set_xlabel("distance from the last step (steps back in time)")
    ax.set_ylabel("mean ||dL/da_t|| (log scale)")
    ax.set_title(f"{task}: gradient flow through time at T = {length} (or the longest T "
                 "run), init (dashed) and trained (solid)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    return True

SWEEP = (("tanh", (0.5, 0.9, 1.0, 1.5, 3.0)), ("sigmoid", (1.0, 3.0, 6.0)),
         ("relu", (0.5, 0.9, 1.0, 1.1, "identity")))


def spectral_sweep(path: Path, length: int, seed: int) -> dict[str, dict]:
    """Gradient flow at initialisation against the spectral radius of ``W_h``.

    For each activation, ``W_h`` = gain x a random orthogonal matrix (its eigenvalues all
    have modulus = gain, so the spectral radius is the gain) or the identity; 64 adding-
    problem sequences of ``length`` steps through an untrained layer and Dense head.
    Draws one panel per activation (gradient norm against distance) and returns each
    curve's :meth:`rnnkit.gradient_flow.LayerFlow.summary`, keyed ``"<activation> <gain>"``.

    Args:
        path: the PNG to write.
        length: sequence length T.
        seed: seed of the data and the weights.
    """
    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnnkit import SimpleRecurrentLayer
    from rnnkit.gradient_flow import gradient_flow

    x, y = adding_batch(np.random.default_rng([seed, 99]), FLOW_SIZE, length)
    results: dict[str, dict] = {}
    fig, axes = plt.subplots(1, len(SWEEP), figsize=(5.0 * len(SWEEP), 3.9), squeeze=False)
    for ax, (activation, gains) in zip(axes[0], SWEEP):
        for gain in gains:
            keras.utils.set_random_seed(seed)
            init = (keras.initializers.Identity() if gain == "identity"
                    else keras.initializers.Orthogonal(gain=gain, seed=seed))
            inputs = keras.Input((length, 2))
            rnn = SimpleRecurrentLayer(UNITS, activation=activation, recurrent_initializer=init)
            model = keras.Model(inputs, keras.layers.Dense(1)(rnn(inputs)))
            flow = gradient_flow(model, x, y, loss_fn=keras.losses.MeanSquaredError()).layers[0]
            key = f"{activation} {gain}"
            results[key] = flow.summary()
            keep = flow.grad_norm > 0
            label = ("identity W_h (IRNN)" if gain == "identity" else f"gain {gain}")
            ax.semilogy(flow.distance[keep], flow.grad_norm[keep], lw=1.5,
                        label=f"{label}: rho={flow.spectral_radius:.2f}, "
                              f"sat={flow.saturation:.0%}, x{flow.decay_per_step():.3f}/step")
        ax.set_title(f"{activation}, untrained, T = {length}", fontsize=10)
        ax.set_xlabel("distance from the last step")
        ax.set_ylabel("mean ||dL/da_t|| (log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("gradient flow at initialisation against the spectral radius of W_h "
                 "(adding problem inputs)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return results


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="T = 10, 25 with a small budget (one to three minutes)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--lengths", default=None, help="comma-separated T values")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--no-skip", action="store_true",
                        help="also run the longer T after a configuration failed")
    parser.add_argument("--flow-length", type=int, default=None,
                        help="T of the gradient-flow figures (default 100; quick: 25)")
    parser.add_argument("--clip-norm", type=float, default=CLIP_NORM,
                        help="clip gradients to this global norm (0: no clipping)")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the gradient-flow sweep over the spectral radius of W_h")
    parser.add_argument("--sweep-only", action="store_true",
                        help="only draw the spectral-radius sweep (no training)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--output", default="runs/memory_horizon")
    args = parser.parse_args(argv)
    budget = QUICK_DEFAULTS if args.quick else DEFAULTS
    for key, value in budget.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.configs = [c for c in args.configs.split(",") if c]
    lengths = args.lengths or ",".join(map(str, QUICK_LENGTHS if args.quick else LENGTHS))
    try:
        args.lengths = sorted(int(t) for t in lengths.split(",") if t)
    except ValueError:
        parser.error(f"--lengths must be comma-separated integers, got {lengths!r}")
    for name, chosen, allowed in (("task", args.tasks, TASKS),
                                  ("configuration", args.configs, CONFIGS)):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            parser.error(f"unknown {name}(s) {bad or chosen}; choose from {','.join(allowed)}")
    if any(t < 2 * COPY_SYMBOLS for t in args.lengths):
        parser.error(f"every length must be at least {2 * COPY_SYMBOLS} (the copy task)")
    if args.flow_length is None:
        args.flow_length = 25 if args.quick else 100
    if args.clip_norm < 0:
        parser.error("--clip-norm must be >= 0 (0: no clipping)")
    if args.max_steps < 1 or args.max_seconds <= 0 or args.eval_every < 1:
        parser.error("--max-steps, --max-seconds and --eval-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON, Markdown and PNGs."""
    args = parse_args(argv)
    from rnnkit.atomic import atomic_write_json, atomic_write_text

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cells: list[Cell] = []
    print(f"budget per cell: {args.max_steps} steps or {args.max_seconds:.0f} s; "
          f"eval every {args.eval_every} steps; batch {BATCH}, {UNITS} units", flush=True)

    def save():
        payload = {
            "command": " ".join(["benchmarks/memory_horizon.py"] + (argv or sys.argv[1:])),
            "budget": {"max_steps": args.max_steps, "max_seconds": args.max_seconds,
                       "eval_every": args.eval_every, "batch": BATCH, "units": UNITS,
                       "learning_rate": LEARNING_RATE, "clip_global_norm": args.clip_norm,
                       "skip_after_failure": not args.no_skip},
            "seed": args.seed,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "cells": [asdict(c) for c in cells],
            "sweep": sweep,
        }
        atomic_write_json(out / "results.json", payload)

    sweep: dict[str, Any] = {}
    if not args.no_sweep or args.sweep_only:
        sweep_length = 50 if args.quick else 200
        sweep.update(spectral_sweep(out / "gradient_flow_sweep.png", sweep_length, args.seed))
        print(f"gradient-flow sweep at T={sweep_length}: decay per step "
              + ", ".join(f"{k}={v['decay_per_step']:.3f}" for k, v in sweep.items()),
              flush=True)
        if args.sweep_only:
            atomic_write_json(out / "sweep.json", {"length": sweep_length, "sweep": sweep})
            print(f"wrote {out}/gradient_flow_sweep.png, sweep.json")
            return 0
    for task in args.tasks:
        for config in args.configs:
            failed_at = None
            for length in args.lengths:
                if failed_at is not None and not args.no_skip:
                    cells.append(Cell(task, config, length, "skipped",
                                      note=f"failed at T={failed_at}"))
                    continue
                cell = run_cell(task, config, length, args.seed, args.max_steps,
                                args.max_seconds, args.eval_every, args.clip_norm)
                cells.append(cell)
                print(f"{task:6s} {config:7s} T={length:<4d} {cell.status:7s} "
                      f"metric={cell.metric:.4f} steps={cell.steps} {cell.seconds:.1f}s "
                      f"{cell.note}"
                      + (f" decay/step init={cell.flow_init['decay_per_step']:.3f} "
                         f"trained={cell.flow_trained['decay_per_step']:.3f}"
                         if cell.flow_init else ""), flush=True)
                if cell.status != "solved" and failed_at is None:
                    failed_at = length
                save()
    table = table_markdown(cells, args.lengths)
    wall = time.perf_counter() - started
    header = (f"budget per cell: {args.max_steps} steps or {args.max_seconds:.0f} s "
              f"(stops when solved); batch {BATCH}, {UNITS} units, Adam {LEARNING_RATE}, "
              f"clip {args.clip_norm or 'none'}; wall time {wall / 60:.1f} min\n\n")
    atomic_write_text(out / "table.md", header + table)
    for task in args.tasks:
        plot_curves(cells, task, args.lengths, out / f"curves_{task}.png")
        flow_length = args.flow_length if args.flow_length in args.lengths else args.lengths[-1]
        plot_flow(cells, task, flow_length, out / f"gradient_flow_{task}.png")
    save()
    print()
    print(header + table)
    print(f"wrote {out}/results.json, table.md, curves_*.png, gradient_flow_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
