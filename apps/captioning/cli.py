"""``rnnkit captioning prepare|train|evaluate|predict|export`` (see docs/captioning.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rnnkit.app_cli import App, AppError, run_app

DATA_HELP = ("tuxpaint (default: Tux Paint stamps, singles and scenes), flickr8k:PATH "
             "(Flickr8k.token.txt + images) or coco:PATH (annotations/captions_*.json + images)")


def _add_arguments(verb: str, parser: argparse.ArgumentParser) -> None:
    if verb in ("prepare", "train"):
        parser.add_argument("--backbone", default="efficientnet_lite0",
                            help="frozen CNN: efficientnet_lite0 (offline weights) or a "
                                 "keras.applications name such as mobilenet_v2 (needs internet)")
    if verb == "train":
        parser.add_argument("--dropout", type=float, default=0.3,
                            help="dropout on features and before the output [default: 0.3]")
        parser.add_argument("--label-smoothing", type=float, default=0.1,
                            help="label smoothing of the token loss [default: 0.1]")
        parser.add_argument("--units", type=int, default=512, help="RNN size [default: 512]")
        parser.add_argument("--imagenet-prior", action=argparse.BooleanOptionalAction,
                            default=None,
                            help="mix the CNN's ImageNet classifier into the word "
                                 "distribution (copy prior; see docs/captioning.md) "
                                 "[default: on for efficientnet_lite0]")
        parser.add_argument("--word-dropout", type=float, default=0.0,
                            help="probability of replacing a teacher-forced input word by "
                                 "<unk> [default: 0]")
    if verb in ("evaluate", "export"):
        parser.add_argument("--beam-width", type=int, default=3, help="beam size [default: 3]")
    if verb == "predict":
        parser.add_argument("--plot", nargs="?", const="captions", default=None, metavar="DIR",
                            help="also save each picture with its caption and attention maps "
                                 "as DIR/<name>.caption.png [default DIR: captions]")


def _prepare(args: argparse.Namespace) -> int:
    from apps.captioning import data as cdata
    from apps.captioning.train import prepare_features

    try:
        prep = prepare_features(args.data, args.quick, args.limit, args.seed, args.backbone)
    except ValueError as exc:
        raise AppError(str(exc)) from exc
    for name, split in prep.splits.items():
        kinds = {k: split.kinds.count(k) for k in sorted(set(split.kinds))}
        print(f"{name}: {len(split)} pictures {kinds}; features {prep.grid[name].shape}")
    if cdata.parse_data_spec(args.data)[0] == "tuxpaint":
        stamps, dropped = cdata.list_stamps(cdata.stamps_root())
        print(f"stamps used: {len(stamps)}; dropped: {dropped}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from apps.captioning.train import train

    try:
        summary = train(args.data, args.output, epochs=args.epochs, batch_size=args.batch_size,
                        seed=args.seed, quick=args.quick, limit=args.limit,
                        strategy=args.strategy, backbone=args.backbone, units=args.units,
                        dropout=args.dropout, label_smoothing=args.label_smoothing,
                        imagenet_prior=args.imagenet_prior, word_dropout=args.word_dropout)
    except ValueError as exc:
        raise AppError(str(exc)) from exc
    print(f"best {summary['monitor']} {summary['best']:.4f} at epoch {summary['best_epoch'] + 1} of "
          f"{summary['epochs_run']}; vocabulary {summary['vocab_size']}; decoder "
          f"{summary['decoder_params']:,} parameters; features {summary['feature_seconds']} s, "
          f"training {summary['train_seconds']} s -> {args.output}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from apps.captioning.train import evaluate

    m = evaluate(args.output, data=args.data, seed=args.seed, quick=args.quick,
                 limit=args.limit, beam_width=args.beam_width)
    for kind in ("single", "scene", "photo"):
        if kind not in m:
            continue
        e = m[kind]
        line = (f"{kind:6s} n={e['count']:4d}  BLEU-1..4 model "
                + "/".join(f"{e['model_beam'][f'bleu{n}']:.1f}" for n in (1, 2, 3, 4))
                + "  nearest-neighbour "
                + "/".join(f"{e['nearest_neighbour'][f'bleu{n}']:.1f}" for n in (1, 2, 3, 4)))
        if "head_noun_accuracy_beam" in e:
            line += (f"  head noun {e['head_noun_accuracy_beam']:.1%} "
                     f"(NN {e['head_noun_accuracy_nearest_neighbour']:.1%})")
        if "all_objects_in_order_beam" in e:
            line += (f"  objects in order {e['all_objects_in_order_beam']:.1%} "
                     f"(NN {e['all_objects_in_order_nearest_neighbour']:.1%})")
        print(line)
        if "head_noun_recognisers" in e:
            r = e["head_noun_recognisers"]
            print(f"       head noun named by the nearest training single {r['nearest_training_single']:.1%}, "
                  f"by ImageNet top-1 {r['imagenet_top1']:.1%}, by either {r['either']:.1%} "
                  "(the decoder's two sources of object names)")
    print(f"reports: {Path(args.output) / 'reports'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from apps.captioning.export import export

    path = export(args.output, args.export_dir, args.version, beam_width=args.beam_width)
    print(f"exported {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np
    import tensorflow as tf

    from rnnkit.export import latest_export

    if not args.inputs:
        raise AppError("give one or more image files: rnnkit captioning predict IMAGE...")
    model_dir = args.model or latest_export(args.export_dir)
    loaded = tf.saved_model.load(str(model_dir))
    fn = loaded.signatures["serving_default"]
    for name in args.inputs:
        path = Path(name)
        if not path.is_file():
            raise AppError(f"{path}: no such image file")
        data = path.read_bytes()
        try:
            out = fn(image_bytes=tf.constant([data]))
        except tf.errors.InvalidArgumentError as exc:
            msg = error_line(exc.message or str(exc))
            print(f"{path}\terror: {msg}", file=sys.stderr)
            continue
        caption = out["captions"].numpy()[0].decode()
        score = float(out["scores"].numpy()[0])
        print(f"{path}\t{caption}\t{score:.3f}")
        if args.plot:
            from apps.captioning.figures import plot_prediction

            img = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
            n = int(out["lengths"].numpy()[0])
            att = out["attention"].numpy()[0][: max(n, 1)]
            target = Path(args.plot) / f"{path.stem}.caption.png"
            plot_prediction(np.asarray(img), caption, target, attention=att, score=score)
            print(f"  plot: {target}")
    return 0


def error_line(message: str) -> str:
    """The informative line of a TensorFlow graph error (the assertion or the op's complaint)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("assertion failed:"):
            return ln.replace("assertion failed: ", "").replace("] [", " ").strip("[]")
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    rest = [ln for ln in lines if not ln.startswith(skip)]
    return rest[0] if rest else lines[0]


APP = App(
    name="captioning",
    description=("Image captioning: frozen EfficientNet-Lite0 features -> an Elman RNN "
                 "decoder with attention; beam search in the exported graph."),
    prepare=_prepare, train=_train, evaluate=_evaluate, predict=_predict, export=_export,
    defaults={"data": None, "epochs": 40, "batch_size": 64},
    quick={"epochs": 8},
    data_help=DATA_HELP,
    predict_inputs_help="image files (JPEG, PNG, GIF, BMP)",
    add_arguments=_add_arguments,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rnnkit captioning``; returns the exit code."""
    return run_app(APP, argv)
