"""Check that a SavedModel is servable by stock TensorFlow Serving.

TF Serving's ``tensorflow_model_server`` links the core TensorFlow op kernels and nothing
else: a graph that uses ``tf.py_function`` (``EagerPyFunc``), ``tf.numpy_function``
(``PyFunc``) or a custom op library (tensorflow-text, sentencepiece, ...) loads in Python
but fails to load in the server. ``check_servable`` reads ``saved_model.pb`` as a proto
(without loading it, so a custom op that is not registered here is still reported rather
than crashing the check), walks every node of the graph and of every function in the
library, and checks the serving signature's inputs and outputs are named.

It then loads the SavedModel the way TF Serving's C++ loader does (a TF1 session: import
the MetaGraph, run the saver's restore op and the init op; tf.saved_model.load in Python
takes a different, object-graph path) and checks every variable the signature reads was
restored, then replays a few of the export's warmup records in that session. A Keras 3
model held by a plain tf.Module passes tf.saved_model.load but fails here (and in TF
Serving) with "Could not find variable ...": the checkpoint restores copies of its
variables, not the ones the signature captures (keras-team/keras#20095,
tensorflow/serving#2250).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: Ops that are registered in core TF but call back into the Python interpreter; they cannot
#: run in TF Serving (there is no Python there), so they are always rejected.
PY_FUNC_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

#: Signature key TF Serving uses when a request names none.
DEFAULT_SIGNATURE = "serving_default"

# Names TF/Keras invent when the author did not name a tensor: ``args_0`` / ``inputs_1`` for
# positional inputs, ``output_0`` for unnamed outputs. Clients cannot rely on these.
_AUTO_INPUT = re.compile(r"^(args|inputs?)_\d+$")
_AUTO_OUTPUT = re.compile(r"^output_\d+$")


class NotServableError(ValueError):
    """The SavedModel cannot be served by stock TF Serving; the message lists why."""


@dataclass
class TensorSpecInfo:
    """dtype name and shape (None for an unknown dim, or for unknown rank) of a signature tensor."""

    dtype: str
    shape: list[int | None] | None


@dataclass
class SignatureInfo:
    """One signature: method name, named inputs and outputs."""

    method_name: str
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]


@dataclass
class ServableReport:
    """What ``check_servable`` found in a servable SavedModel.

    Attributes:
        path: the SavedModel directory checked.
        op_counts: op type -> number of nodes using it (graph + function library).
        num_functions: functions in the library.
        signatures: signature key -> SignatureInfo.
        tags: the tag-sets of the meta graphs.
    """

    path: Path
    op_counts: Counter = field(default_factory=Counter)
    num_functions: int = 0
    signatures: dict[str, SignatureInfo] = field(default_factory=dict)
    tags: list[list[str]] = field(default_factory=list)

    @property
    def ops(self) -> set[str]:
        """The set of op types used."""
        return set(self.op_counts)


@lru_cache(maxsize=1)
def core_ops() -> frozenset[str]:
    """Names of the core TensorFlow ops (the ones ``tf.raw_ops`` exposes), minus py-funcs.

    ``tf.raw_ops`` is generated from TF's own op registrations at build time, so ops
    registered later by ``tf.load_op_library`` (tensorflow-text, custom kernels) are not in
    it even when they are loaded in this process; TF-internal test ops are not either.
    """
    import tensorflow as tf

    names = {n for n in dir(tf.raw_ops) if not n.startswith("_")}
    return frozenset(names - PY_FUNC_OPS)


def _tensor_info(info) -> TensorSpecInfo:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(info.dtype).name if info.dtype else "invalid"
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    return TensorSpecInfo(dtype=dtype, shape=shape)


def _read_saved_model_proto(saved_model_dir: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    pb = saved_model_dir / "saved_model.pb"
    if not pb.is_file():
        if (saved_model_dir / "saved_model.pbtxt").is_file():
            from google.protobuf import text_format

            sm = saved_model_pb2.SavedModel()
            text_format.Parse((saved_model_dir / "saved_model.pbtxt").read_text(), sm)
            return sm
        raise NotServableError(f"{saved_model_dir}: no saved_model.pb (not a SavedModel directory)")
    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError; keep the path in the message
        raise NotServableError(f"{pb}: cannot parse SavedModel proto: {exc}") from exc
    return sm


def _session_check(path: Path, signature_name: str, max_warmup: int) -> list[str]:
    """Load like TF Serving (TF1 session + restore op + init op); return problems found."""
    import tensorflow as tf

    problems: list[str] = []
    warm = path / "assets.extra" / "tf_serving_warmup_requests"
    records = []
    if warm.is_file() and max_warmup > 0:
        from rnnkit.warmup import read_warmup_requests

        try:
            records = [log.predict_log.request for log in read_warmup_requests(warm)[:max_warmup]]
        except Exception as exc:  # noqa: BLE001
            return [f"{warm}: not a valid TFRecord of PredictionLog protos: {exc}"]
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        try:
            from rnnkit.layers._compat import silence_tf_deprecations

            # The TF1 loader is deprecated for users, but it is exactly what TF Serving runs.
            with silence_tf_deprecations():
                meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
        except Exception as exc:  # noqa: BLE001 - TF raises many types here; the message is what matters
            return [f"TF Serving's session loader cannot load it: {type(exc).__name__}: {str(exc)[:500]}"]
        sig = meta.signature_def.get(signature_name)
        if sig is None:
            return problems  # reported by the signature check
        nodes = {n.name: n for n in meta.graph_def.node}
        # Variables the signature can reach: walk the main graph back from its outputs.
        stack = [t.name.split(":")[0] for t in sig.outputs.values()]
        seen: set[str] = set()
        variables: list[str] = []
        while stack:
            name = stack.pop()
            if name in seen or name not in nodes:
                continue
            seen.add(name)
            node = nodes[name]
            if node.op == "VarHandleOp":
                variables.append(name)
            stack.extend(i.lstrip("^").split(":")[0] for i in node.input)
        if variables:
            flags = sess.run(
                [tf.raw_ops.VarIsInitializedOp(resource=graph.get_tensor_by_name(v + ":0")) for v in variables]
            )
            missing = sorted(v for v, ok in zip(variables, flags) if not ok)
            if missing:
                shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
                problems.append(
                    f"{len(missing)} variable(s) read by {signature_name!r} are not restored by TF "
                    f"Serving's loader (it would answer 'Could not find variable'): {shown}. A Keras 3 "
                    "model inside a tf.Module needs its backing tf.Variables tracked before saving, "
                    "e.g. `module.model_variables = [w.value for w in model.weights]` "
                    "(keras-team/keras#20095)"
                )
                return problems
        for i, req in enumerate(records):
            key = req.model_spec.signature_name or DEFAULT_SIGNATURE
            rsig = meta.signature_def.get(key)
            if rsig is None:
                problems.append(f"warmup record {i} targets missing signature {key!r}")
                continue
            unknown = sorted(set(req.inputs) - set(rsig.inputs))
            if unknown:
                problems.append(f"warmup record {i} has inputs {unknown} that signature {key!r} lacks")
                continue
            feed = {rsig.inputs[k].name: tf.make_ndarray(v) for k, v in req.inputs.items()}
            fetch = {k: v.name for k, v in rsig.outputs.items()}
            try:
                sess.run(fetch, feed_dict=feed)
            except Exception as exc:  # noqa: BLE001
                msg = str(getattr(exc, "message", exc)).split("\n\t [[")[0][:500]
                problems.append(
                    f"warmup record {i} fails in TF Serving's session loader "
                    f"(TF Serving replays it at load and would refuse the version): {type(exc).__name__}: {msg}"
                )
    return problems


def check_servable(
    saved_model_dir: str | Path,
    signature_name: str = DEFAULT_SIGNATURE,
    session_check: bool = True,
    max_warmup_records: int = 3,
) -> ServableReport:
    """Check a SavedModel only uses core TF ops and has a named serving signature.

    Args:
        saved_model_dir: a SavedModel directory (e.g. ``saved_models/sentiment/1``).
        signature_name: the signature that must exist with named inputs and outputs
            (default ``serving_default``, the one TF Serving uses when a request names none).
        session_check: also load it as TF Serving does (TF1 session: restore op + init op),
            check every variable the signature reads is restored, and replay warmup records.
        max_warmup_records: how many ``assets.extra/tf_serving_warmup_requests`` records the
            session check replays (0: none).

    Returns:
        A ServableReport (ops used, signatures with dtypes and shapes).

    Raises:
        NotServableError: listing every problem found: non-core ops (with the functions
            that use them), py-func ops, a missing signature, unnamed / auto-named inputs
            or outputs, no ``serve`` meta graph, variables TF Serving's loader would not
            restore, or warmup records that fail in TF Serving's loading path.
    """
    path = Path(saved_model_dir)
    sm = _read_saved_model_proto(path)
    report = ServableReport(path=path)
    problems: list[str] = []
    allowed = core_ops()

    serve_graphs = [mg for mg in sm.meta_graphs if "serve" in mg.meta_info_def.tags]
    report.tags = [list(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    if not serve_graphs:
        problems.append(f"no meta graph tagged 'serve' (tags: {report.tags})")

    # op type -> places it is used, to make the error actionable.
    offenders: dict[str, set[str]] = {}
    for mg in sm.meta_graphs:
        library = mg.graph_def.library
        fn_names = {f.signature.name for f in library.function}
        report.num_functions += len(library.function)

        def visit(op: str, where: str, fn_names: set[str] = fn_names) -> None:
            # A node may call a library function directly by name: that is not an op.
            if op in fn_names:
                return
            report.op_counts[op] += 1
            if op not in allowed:
                offenders.setdefault(op, set()).add(where)

        for node in mg.graph_def.node:
            visit(node.op, "graph")
        for fn in library.function:
            for node in fn.node_def:
                visit(node.op, fn.signature.name)
    # TF Serving runs XLA-compiled functions only with --xla_cpu_compilation_enabled.
    xla_functions = sorted(
        fn.signature.name
        for mg in sm.meta_graphs
        for fn in mg.graph_def.library.function
        if "_XlaMustCompile" in fn.attr and fn.attr["_XlaMustCompile"].b
    )
    if xla_functions:
        shown = ", ".join(xla_functions[:3]) + (
            f" and {len(xla_functions) - 3} more" if len(xla_functions) > 3 else "")
        problems.append(
            f"{len(xla_functions)} XLA-compiled function(s) ({shown}): TF Serving runs them only "
            "with --xla_cpu_compilation_enabled; trace serving functions under "
            "rnnkit.layers.xla_loops(False) (rnnkit.export.export_saved_model does)")
    if offenders:
        lines = []
        for op in sorted(offenders):
            why = (
                "calls back into Python (tf.py_function / tf.numpy_function); TF Serving has no Python"
                if op in PY_FUNC_OPS
                else "not a core TensorFlow op (custom op library such as tensorflow-text?)"
            )
            places = sorted(offenders[op])
            shown = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
            lines.append(f"  {op}: {why}; used in {shown}")
        problems.append("ops TF Serving cannot run:\n" + "\n".join(lines))

    for mg in serve_graphs[:1]:
        for key, sig in mg.signature_def.items():
            report.signatures[key] = SignatureInfo(
                method_name=sig.method_name,
                inputs={k: _tensor_info(v) for k, v in sig.inputs.items()},
                outputs={k: _tensor_info(v) for k, v in sig.outputs.items()},
            )
        sig = report.signatures.get(signature_name)
        if sig is None:
            names = sorted(k for k in report.signatures if not k.startswith("__"))
            problems.append(f"no signature {signature_name!r} (signatures: {names})")
        else:
            if not sig.inputs:
                problems.append(f"signature {signature_name!r} has no inputs")
            if not sig.outputs:
                problems.append(f"signature {signature_name!r} has no outputs")
            auto_in = sorted(k for k in sig.inputs if _AUTO_INPUT.match(k))
            auto_out = sorted(k for k in sig.outputs if _AUTO_OUTPUT.match(k))
            if auto_in:
                problems.append(
                    f"signature {signature_name!r} has auto-named inputs {auto_in}: give the "
                    "tf.function's TensorSpecs a name= / use named keyword arguments"
                )
            if auto_out:
                problems.append(
                    f"signature {signature_name!r} has auto-named outputs {auto_out}: return a "
                    "dict of named tensors"
                )
            bad_dtype = sorted(
                k for k, v in {**sig.inputs, **sig.outputs}.items() if v.dtype in ("invalid", "variant", "resource")
            )
            if bad_dtype:
                problems.append(
                    f"signature {signature_name!r} tensors {bad_dtype} have dtypes TF Serving "
                    "cannot encode in a response"
                )
            if sig.method_name and sig.method_name != "tensorflow/serving/predict":
                problems.append(
                    f"signature {signature_name!r} method is {sig.method_name!r}, "
                    "expected 'tensorflow/serving/predict'"
                )

    # Only worth loading when the graph is otherwise fine (and unknown ops would not load).
    if not problems and session_check and serve_graphs:
        problems.extend(_session_check(path, signature_name, max_warmup_records))

    if problems:
        raise NotServableError(
            f"{path} is not servable by TensorFlow Serving:\n- " + "\n- ".join(problems)
        )
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m rnnkit.servable DIR [DIR ...]``: check SavedModels, print a summary."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m rnnkit.servable", description=main.__doc__)
    p.add_argument("dirs", nargs="+", type=Path, help="SavedModel directories")
    p.add_argument("--signature", default=DEFAULT_SIGNATURE)
    args = p.parse_args(argv)
    rc = 0
    for d in args.dirs:
        try:
            r = check_servable(d, args.signature)
        except NotServableError as exc:
            print(f"FAIL {exc}")
            rc = 1
            continue
        sig = r.signatures[args.signature]
        ins = ", ".join(f"{k}:{v.dtype}{v.shape}" for k, v in sig.inputs.items())
        outs = ", ".join(f"{k}:{v.dtype}{v.shape}" for k, v in sig.outputs.items())
        print(f"OK   {d}: {len(r.ops)} op types, {r.num_functions} functions; in({ins}) out({outs})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
