"""The app lifecycle: one command line, run folder, error policy and export path for every app.

An app is a subclass of :class:`App` that supplies only what is its own: its data
(:meth:`App.prepare`), its model and training (:meth:`App.train`), what is special in its
evaluation (:meth:`App.evaluate`), its serving graph (:meth:`App.servable`) and how a
prediction reads on the terminal (:meth:`App.predict`). The lifecycle owns the rest:

* the verbs ``prepare | train | evaluate | predict | export`` and their flags, each verb
  receiving one :class:`Run` (the resolved options plus the run folder);
* the run folder: ``<output>/model.keras`` (the trained model), ``<output>/run.json``
  (one schema for every app: the options, versions, times and the app's training summary),
  ``<output>/history.json``, and ``<output>/reports/`` with ``metrics.json``,
  ``training_curves.png``, ``gradient_flow.png`` (from :meth:`App.gradient_probe`, see
  :mod:`rnnkit.gradient_flow`) and the app's figures;
* loading the trained model and the exports, with errors that name what is missing;
* export: a new ``saved_models/<app>/<N>/`` carrying ``metrics.json``, each weight saved
  once, checked servable before it is renamed into place;
* errors: :class:`rnnkit.errors.RnnkitError` (and ``FileNotFoundError``) print one
  ``error:`` line and exit 2; anything else is a bug and keeps its traceback.

A minimal app::

    class EchoApp(App):
        name = "echo"
        description = "..."
        defaults = {"data": "default", "epochs": 3, "batch_size": 32}

        def prepare(self, run): ...
        def train(self, run):
            model = ...
            run.fit(model, train_ds, val_ds, monitor="val_accuracy")
            run.save_model(model)
            return {"val_accuracy": ...}
        def evaluate(self, run): return Evaluation(metrics={...}, headline={...})
        def servable(self, run): return Servable(module, {"serving_default": module.serve})
        def predict(self, run, export, inputs): yield "..."

    main = EchoApp.main        # apps/echo/__main__.py: sys.exit(main())
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rnnkit.errors import DataError, InputError, ModelError, RnnkitError
from rnnkit.paths import default_output_dir, saved_models_dir

if TYPE_CHECKING:  # the lifecycle imports TensorFlow only when a verb needs it
    import keras
    import tensorflow as tf

__all__ = ["VERBS", "App", "Evaluation", "GradientProbe", "LoadedExport", "Run", "Servable",
           "graph_error_message"]

VERBS = ("prepare", "train", "evaluate", "predict", "export")

RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"

_VERB_HELP = {
    "prepare": "fetch the raw data (hash-checked) and build the dataset; no-op when done",
    "train": "train the model (resumes after an interruption), save <output>/model.keras",
    "evaluate": "evaluate on held-out data; write metrics.json and PNGs to <output>/reports",
    "export": "export a new SavedModel version (TF Serving layout) with its metrics",
    "predict": "run the latest export (or --model) on inputs from the command line or stdin",
}

# Common flags per verb. The data and location flags go to every verb (ignored where they
# do not matter) so one set of flags drives a whole pipeline:
# `for v in prepare train evaluate export; do rnnkit app $v --output X --export-dir Y; done`.
_SHARED = ("data", "limit", "quick", "seed", "output", "export_dir")
_VERB_FLAGS: dict[str, tuple[str, ...]] = {
    "prepare": _SHARED,
    "train": (*_SHARED, "epochs", "batch_size"),
    "evaluate": (*_SHARED, "batch_size"),
    "export": (*_SHARED, "version"),
    "predict": (*_SHARED, "model"),
}


@dataclass
class Evaluation:
    """What an app's ``evaluate`` returns; the lifecycle writes and prints it.

    Attributes:
        metrics: JSON-serialisable figures; written to ``reports/metrics.json`` under the
            lifecycle's own keys (``app``, ``data``, ``seed``, ``limit``, ``train``...).
        headline: label -> value rows printed on the terminal (model figure beside its
            baseline); floats print with four decimals.
        title: the first line of the printed block.
        notes: further lines printed after the block (examples, report paths).
        metrics_file: the file in ``reports/`` (``metrics.json``, which ``export`` puts
            in the model's card; another name for figures that must not end up there,
            e.g. a validation-split sweep).
    """

    metrics: dict[str, Any]
    headline: dict[str, Any]
    title: str = ""
    notes: list[str] = field(default_factory=list)
    metrics_file: str = METRICS_FILE


@dataclass
class Servable:
    """What an app's ``servable`` returns: the module to save and its signatures.

    Attributes:
        module: a ``tf.Module`` (use :class:`rnnkit.export.ServingModule` so each weight
            is saved once).
        signatures: signature name -> ``tf.function`` with an input signature; must hold
            ``serving_default``.
        warmup: TF Serving warmup requests for ``serving_default`` (input name -> array).
        metrics_keys: keep only these keys of ``metrics.json`` in the export's card
            (default: all).
    """

    module: Any
    signatures: dict[str, Any]
    warmup: list[dict[str, Any]] = field(default_factory=list)
    metrics_keys: Sequence[str] | None = None


@dataclass
class GradientProbe:
    """A small held-out batch for the gradient-flow report every ``evaluate`` writes.

    Attributes:
        model: a Keras model containing ``SimpleRecurrentLayer`` (the network trained,
            taking the batch's inputs as they are, e.g. token ids rather than strings).
        inputs: one batch of model inputs (a tensor or a structure of tensors).
        targets: the matching targets.
        loss: ``loss(targets, predictions) -> scalar``, the training loss.
    """

    model: Any
    inputs: Any
    targets: Any
    loss: Any


class LoadedExport:
    """An export opened for ``predict``: its folder and its signatures.

    Args:
        path: the SavedModel folder.
        loaded: the object ``tf.saved_model.load`` returned.
    """

    def __init__(self, path: Path, loaded: Any) -> None:
        self.path = path
        self.loaded = loaded

    def signature(self, name: str = "serving_default") -> Any:
        """Return a signature function by name (``ModelError`` if the export lacks it)."""
        signatures = self.loaded.signatures
        if name not in signatures:
            raise ModelError(f"{self.path} has no signature {name!r} "
                             f"(it has {', '.join(sorted(signatures)) or 'none'})")
        return signatures[name]


class Run:
    """One invocation of a verb: the resolved options and the run folder's files.

    Options are attributes (``run.epochs``, ``run.data``, ``run.batch_size``, app flags);
    ``run.get(name, default)`` reads an option an older run folder may lack.

    Args:
        app: the app's name.
        verb: the verb being run.
        options: every option after defaults, ``--quick`` values and the command line.
    """

    def __init__(self, app: str, verb: str, options: Mapping[str, Any],
                 shard_policy: str = "data") -> None:
        self.app = app
        self.verb = verb
        self.options = dict(options)
        self.shard_policy = shard_policy
        self.started = time.time()

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{self.app} {self.verb} has no option {name!r}")

    def get(self, name: str, default: Any = None) -> Any:
        """Return option ``name``, or ``default`` when unset or None."""
        value = self.options.get(name)
        return default if value is None else value

    # -- locations ---------------------------------------------------------------------
    @property
    def output(self) -> Path:
        """The run folder (``--output``, default ``runs/<app>``)."""
        return Path(self.options.get("output") or default_output_dir(self.app))

    @property
    def reports(self) -> Path:
        """``<output>/reports``, created."""
        path = self.output / "reports"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def export_dir(self) -> Path:
        """The export base (``--export-dir``, default ``saved_models/<app>``)."""
        return Path(self.options.get("export_dir") or saved_models_dir(self.app))

    # -- training ----------------------------------------------------------------------
    @property
    def strategy(self) -> tf.distribute.Strategy:
        """The ``tf.distribute`` strategy of ``--strategy`` (one per process)."""
        from rnnkit.distributed import get_strategy

        return get_strategy(self.get("strategy", "default"))

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run's files (False on other multi_worker workers)."""
        from rnnkit.distributed import is_chief

        return is_chief()

    def seed_everything(self) -> None:
        """Seed Python, NumPy, TensorFlow and Keras with ``--seed``."""
        from rnnkit.training import seed_everything

        seed_everything(self.seed)

    def fit(self, model: keras.Model, train_ds: Any, val_ds: Any, *, subdir: str | None = None,
            **kwargs: Any) -> dict[str, Any]:
        """Train with :func:`rnnkit.training.fit` in this run's folder (or ``<output>/<subdir>``)
        under ``--strategy``, the datasets sharded by the app's ``shard_policy``.

        Args:
            model: a model compiled under ``run.strategy.scope()``.
            train_ds: the training ``tf.data.Dataset`` (batches of ``--batch-size``, the
                global batch).
            val_ds: the validation dataset.
            subdir: train in a sub-folder of the run folder (e.g. one per fold).
            **kwargs: ``monitor``, ``mode``, ``patience``, ``extra_callbacks``...
        """
        from rnnkit.training import fit

        out = self.output / subdir if subdir else self.output
        kwargs.setdefault("shard_policy", self.shard_policy)
        return fit(model, train_ds, val_ds, output_dir=out, epochs=self.epochs,
                   strategy=self.strategy, **kwargs)

    def model_path(self, name: str = "model.keras") -> Path:
        """``<output>/<name>``."""
        return self.output / name

    def save_model(self, model: keras.Model, name: str = "model.keras") -> Path:
        """Save ``model`` to ``<output>/<name>`` atomically."""
        from rnnkit.training import save_model

        return save_model(model, self.model_path(name))

    def load_model(self, name: str = "model.keras") -> keras.Model:
        """Load ``<output>/<name>`` without its optimizer state.

        Raises:
            ModelError: no such file (says which verb creates it).
        """
        path = self.model_path(name)
        if not path.is_file():
            raise ModelError(f"no trained model at {path}: run `rnnkit {self.app} train` "
                             "first (or pass --output)")
        import keras

        return keras.saving.load_model(path, compile=False)

    # -- the run-config file -----------------------------------------------------------
    def write_run_config(self, summary: Mapping[str, Any]) -> Path:
        """Write ``<output>/run.json``: one schema for every app.

        ``{"app", "rnnkit_version", "tensorflow_version", "python", "created",
        "options": {...}, "train": {app summary}, "train_seconds"}``
        """
        from rnnkit import __version__
        from rnnkit.atomic import atomic_write_json

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.options.items()
                   if k not in ("inputs", "verbose")}
        config = {
            "app": self.app,
            "rnnkit_version": __version__,
            "tensorflow_version": _tensorflow_version(),
            "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "options": options,
            "train": dict(summary),
            "train_seconds": round(time.time() - self.started, 1),
        }
        self.output.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(self.output / RUN_FILE, config)

    def run_config(self) -> dict[str, Any]:
        """Read ``<output>/run.json`` (``ModelError`` when ``train`` has not run)."""
        path = self.output / RUN_FILE
        if not path.is_file():
            raise ModelError(f"no {RUN_FILE} in {self.output}: run `rnnkit {self.app} train` "
                             "first (or pass --output)")
        return json.loads(path.read_text())

    def trained_option(self, name: str, default: Any = None) -> Any:
        """An option as ``train`` used it (from ``run.json``), else ``default``."""
        return self.run_config()["options"].get(name, default)


def _tensorflow_version() -> str | None:
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "__version__", None)


class App:
    """Base class of the four apps: subclass it and fill in the hooks.

    Class attributes:
        name: the package name (``"sentiment"``); run and export folders derive from it.
        description: one paragraph for ``--help``.
        defaults: default values of common flags (``data``, ``epochs``, ``batch_size``)
            and of the app's own flags.
        quick: what ``--quick`` uses instead (explicit flags still win).
        data_help: help for ``--data`` (the accepted ``FORMAT:PATH`` specs).
        inputs: what ``predict`` takes: ``"text"`` (arguments, or stdin lines) or
            ``"file"`` (paths, each checked to exist).
        inputs_help: help for ``predict``'s positional inputs.
        signature_inputs: the input names of this app's ``serving_default``: an export
            whose default signature takes other inputs is another app's, and ``predict``
            says so instead of failing inside TensorFlow.
        signature_outputs: outputs ``predict`` needs from ``serving_default`` (two apps
            may take the same input, e.g. ``text``; their outputs tell them apart).
        shard_policy: how ``tf.data`` input is split between the workers of a
            ``multi_worker`` run (``"data"``: every worker reads all input and takes its
            share of each global batch; ``"file"``, ``"auto"``, ``"off"``; see
            docs/distributed.md).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    quick: ClassVar[Mapping[str, Any]] = {}
    data_help: ClassVar[str] = "data source spec FORMAT:PATH (default: the app's default data)"
    inputs: ClassVar[str] = "text"
    inputs_help: ClassVar[str] = "inputs to run; read from stdin (one per line) when omitted"
    signature_inputs: ClassVar[tuple[str, ...]] = ()
    signature_outputs: ClassVar[tuple[str, ...]] = ()
    shard_policy: ClassVar[str] = "data"

    # -- hooks an app fills in -----------------------------------------------------------
    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        """Add the app's own flags to ``verb``'s parser (default: none)."""

    def prepare(self, run: Run) -> Mapping[str, Any]:
        """Fetch and build the data; return counts to print (label -> value)."""
        raise NotImplementedError

    def train(self, run: Run) -> Mapping[str, Any]:
        """Train, save the model with ``run.save_model``; return a JSON summary for run.json."""
        raise NotImplementedError

    def evaluate(self, run: Run) -> Evaluation:
        """Score the trained model on held-out data (figures go to ``run.reports``)."""
        raise NotImplementedError

    def servable(self, run: Run) -> Servable:
        """Build the serving module of the trained model in ``run.output``."""
        raise NotImplementedError

    def predict(self, run: Run, export: LoadedExport, inputs: list[str]) -> Iterable[str]:
        """Run ``export`` on ``inputs``; yield one printed line per result."""
        raise NotImplementedError

    def gradient_probe(self, run: Run) -> GradientProbe | None:
        """A held-out batch for the gradient-flow report (``reports/gradient_flow.png``).

        Default: none (no report). Apps return the trained network (not the string-input
        serving wrapper), one batch of its inputs and targets, and its training loss.
        """
        return None

    # -- the lifecycle -------------------------------------------------------------------
    def _prepare(self, run: Run) -> None:
        started = time.time()
        counts = self.prepare(run) or {}
        from rnnkit.reports import format_headline

        print(format_headline(f"{self.name}: data ready ({time.time() - started:.1f} s)",
                              dict(counts)))

    def _train(self, run: Run) -> None:
        from rnnkit.reports import format_headline

        summary = dict(self.train(run) or {})
        if not run.is_chief:
            return  # only the chief writes the run's files
        path = run.write_run_config(summary)
        seconds = json.loads(path.read_text())["train_seconds"]
        print(format_headline(f"{self.name}: training done in {seconds:.0f} s",
                              {**_printable(summary), "run folder": str(run.output)}))

    def _evaluate(self, run: Run) -> None:
        from rnnkit.atomic import atomic_write_json
        from rnnkit.reports import format_headline, plot_history

        started = time.time()
        config = run.run_config()
        result = self.evaluate(run)
        metrics = {
            "app": self.name,
            "data": run.get("data"),
            "seed": run.get("seed"),
            "limit": run.get("limit"),
            **result.metrics,
            "train": config.get("train", {}),
            "train_seconds": config.get("train_seconds"),
            "evaluate_seconds": round(time.time() - started, 1),
        }
        history = run.output / HISTORY_FILE
        if history.is_file():
            plot_history(json.loads(history.read_text()), run.reports / CURVES_FILE,
                         title=f"{self.name}: training curves")
        probe = self.gradient_probe(run)
        if probe is not None:
            from rnnkit.gradient_flow import write_gradient_flow_report

            metrics["gradient_flow"] = write_gradient_flow_report(
                probe.model, probe.inputs, probe.targets, run.reports, loss_fn=probe.loss,
                title=f"{self.name}: gradient flow through time (held-out batch)")
        atomic_write_json(run.reports / result.metrics_file, metrics)
        print(format_headline(result.title or f"{self.name}: held-out evaluation",
                              {**result.headline, "reports": str(run.reports)}))
        for line in result.notes:
            print(line)

    def _export(self, run: Run) -> None:
        from rnnkit.export import export_saved_model

        servable = self.servable(run)
        metrics_path = run.output / "reports" / METRICS_FILE
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
        if metrics is None:
            print(f"note: {metrics_path} not found (run `evaluate` first); exporting "
                  "without an evaluation card", file=sys.stderr)
        elif servable.metrics_keys is not None:
            metrics = {k: metrics[k] for k in servable.metrics_keys if k in metrics}
        path = export_saved_model(
            servable.module, run.export_dir, servable.signatures, version=run.get("version"),
            metrics=metrics, warmup_requests=servable.warmup or None,
        )
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(f"exported {path} ({size / 2**20:.1f} MiB)")

    def _predict(self, run: Run) -> None:
        inputs = self._read_inputs(run.options.get("inputs") or [])
        export = self.open_export(run.get("model") or _latest(run.export_dir))
        try:
            for line in self.predict(run, export, inputs):
                print(line)
        except Exception as exc:
            message = graph_error_message(exc)
            if message is None:
                raise
            raise InputError(message) from exc

    def _read_inputs(self, inputs: Sequence[str]) -> list[str]:
        if self.inputs == "file":
            if not inputs:
                raise InputError(f"give one or more files: rnnkit {self.name} predict FILE...")
            for name in inputs:
                path = Path(name)
                if not path.is_file():
                    raise InputError(f"{name}: no such file")
                if path.stat().st_size == 0:
                    raise InputError(f"{name}: the file is empty")
            return list(inputs)
        if inputs:
            return list(inputs)
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("no input: give texts as arguments or pipe them on stdin, "
                             "one per line")
        texts = [line.rstrip("\n") for line in sys.stdin]
        if not texts:
            raise InputError("no input on stdin")
        return texts

    def open_export(self, path: str | os.PathLike[str]) -> LoadedExport:
        """Load the SavedModel at ``path`` and check it is this app's export.

        Raises:
            ModelError: not a SavedModel folder, or another app's export.
        """
        folder = Path(path)
        if not (folder / "saved_model.pb").is_file():
            raise ModelError(f"{folder} is not a SavedModel folder (no saved_model.pb); "
                             f"run `rnnkit {self.name} export` or pass --model <export folder>")
        import tensorflow as tf

        loaded = LoadedExport(folder, tf.saved_model.load(str(folder)))
        fn = loaded.signature("serving_default")
        names = tuple(sorted(fn.structured_input_signature[1]))
        if self.signature_inputs and names != tuple(sorted(self.signature_inputs)):
            raise ModelError(
                f"{folder} is not a {self.name} export: its serving_default takes "
                f"{', '.join(names) or 'nothing'}, a {self.name} export takes "
                f"{', '.join(sorted(self.signature_inputs))}")
        missing = [k for k in self.signature_outputs if k not in fn.structured_outputs]
        if missing:
            raise ModelError(
                f"{folder} is not a {self.name} export: its serving_default returns "
                f"{', '.join(sorted(fn.structured_outputs))}, not {', '.join(missing)}")
        return loaded

    # -- the command line ----------------------------------------------------------------
    def build_parser(self) -> argparse.ArgumentParser:
        """The ``argparse`` parser: one subcommand per verb, each with ``--help``."""
        parser = argparse.ArgumentParser(
            prog=f"rnnkit {self.name}", description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="debug logging, TensorFlow's start-up logs included")
        sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
        for verb in VERBS:
            verb_parser = sub.add_parser(verb, help=_VERB_HELP[verb],
                                         description=_VERB_HELP[verb])
            verb_parser.add_argument("-v", "--verbose", action="store_true",
                                     default=argparse.SUPPRESS,
                                     help="debug logging, TensorFlow's start-up logs included")
            self._add_common(verb_parser, verb)
            self.add_arguments(verb, verb_parser)
        return parser

    def _add_common(self, parser: argparse.ArgumentParser, verb: str) -> None:
        flags = _VERB_FLAGS[verb]
        d = self.defaults
        if "data" in flags:
            parser.add_argument("--data", default=None, metavar="SPEC",
                                help=f"{self.data_help} [default: {d.get('data', 'app default')}]")
        if "epochs" in flags:
            parser.add_argument("--epochs", type=int, default=None,
                                help=f"maximum epochs [default: {d.get('epochs')}]")
        if "batch_size" in flags:
            parser.add_argument("--batch-size", type=int, default=None,
                                help=f"global batch size [default: {d.get('batch_size')}]")
        if "output" in flags:
            parser.add_argument("--output", type=Path, default=None, metavar="DIR",
                                help=f"run folder [default: {default_output_dir(self.name)}]")
        if "seed" in flags:
            parser.add_argument("--seed", type=int, default=None,
                                help=f"random seed [default: {d.get('seed', 1337)}]")
        if "quick" in flags:
            parser.add_argument("--quick", action="store_true",
                                help="small budgets: the whole app end to end in a minute or two")
        if "limit" in flags:
            parser.add_argument("--limit", type=int, default=None, metavar="N",
                                help="use at most N examples per split (tests, smoke runs)")
        if "export_dir" in flags:
            parser.add_argument("--export-dir", type=Path, default=None, metavar="DIR",
                                help=f"export base folder [default: {saved_models_dir(self.name)}]")
        if "version" in flags:
            parser.add_argument("--version", type=int, default=None,
                                help="export version [default: highest existing + 1]")
        if "model" in flags:
            parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                                help="a SavedModel folder [default: latest under --export-dir]")
        if verb == "train":
            from rnnkit.distributed import add_training_arguments

            add_training_arguments(parser)
        if verb == "predict":
            parser.add_argument("inputs", nargs="*", help=self.inputs_help)

    def parse(self, argv: Sequence[str] | None = None) -> Run:
        """Parse ``argv`` into a :class:`Run` with every default filled in."""
        args = self.build_parser().parse_args(argv)
        options: dict[str, Any] = {"seed": 1337, "quick": False}
        options.update(self.defaults)
        if getattr(args, "quick", False):
            options.update(self.quick)
        for key, value in vars(args).items():
            if value is not None or key not in options:
                options[key] = value
        verb = options.pop("verb")
        return Run(self.name, verb, options, shard_policy=self.shard_policy)

    def run(self, run: Run) -> None:
        """Run ``run.verb`` (errors propagate; :meth:`main` turns them into exit codes)."""
        getattr(self, f"_{run.verb}")(run)

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """Parse the command line, run the verb, return the process exit code.

        Args:
            argv: arguments without the program name (default: ``sys.argv[1:]``).
        """
        argv = list(sys.argv[1:] if argv is None else argv)
        from rnnkit import distributed
        from rnnkit.logs import configure_logging

        configure_logging(verbose=any(a in ("-v", "--verbose") for a in argv))

        app = cls()
        run = app.parse(argv)
        try:
            if run.verb == "train":
                if run.get("workers"):
                    return distributed.launch_local_workers([cls.name, *argv], run.workers)
                try:
                    # First, before any other TensorFlow work: multi_worker needs that.
                    distributed.strategy_from_args(argparse.Namespace(
                        strategy=run.get("strategy"),
                        mixed_precision=run.get("mixed_precision")))
                except ValueError as exc:  # no TF_CONFIG, a bad policy name
                    raise RnnkitError(str(exc)) from exc
            app.run(run)
        except KeyboardInterrupt:
            hint = " (run `train` again to resume)" if run.verb == "train" else ""
            print(f"\ninterrupted{hint}", file=sys.stderr)
            return 130
        except (RnnkitError, FileNotFoundError) as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except distributed.WorkerLostError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0


def _printable(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The flat scalar entries of a summary (nested dicts stay in run.json only)."""
    return {k: v for k, v in summary.items() if isinstance(v, (str, int, float))}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"  # without the "[Errno 2]" prefix
    return str(exc)


def _latest(export_base: Path) -> Path:
    from rnnkit.export import latest_export

    try:
        return latest_export(export_base)
    except FileNotFoundError as exc:
        raise ModelError(str(exc)) from exc


def graph_error_message(exc: BaseException) -> str | None:
    """The informative line of a TensorFlow ``InvalidArgumentError`` raised by an export.

    Exports check their inputs inside the graph (``tf.debugging.Assert``): a bad input
    surfaces as an InvalidArgumentError whose first useful line names the problem.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(exc, tf.errors.InvalidArgumentError):
        return None
    message = getattr(exc, "message", None) or str(exc)
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("assertion failed:"):
            return ln.replace("assertion failed: ", "").replace("] [", " ").strip("[]")
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    rest = [ln for ln in lines if not ln.startswith(skip)]
    return (rest or lines or ["invalid input"])[0]


# Re-exported for apps: the errors live in rnnkit.errors.
__all__ += ["DataError", "InputError", "ModelError", "RnnkitError"]
