"""``rnnkit captioning prepare|train|evaluate|predict|export`` (also ``python -m apps.captioning``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rnnkit.app import App, Run

from . import export, formats
from . import evaluate as evaluation
from . import train as training
from .data import list_stamps, stamps_root
from .features import prepare_features


def _backbone(name: str) -> str:
    """``--backbone``: a name :func:`rnnkit.backbones.get_backbone` takes, in full."""
    from rnnkit.backbones import KERAS_APPLICATIONS, OFFLINE_BACKBONES, canonical_name

    full = canonical_name(name)
    if full not in OFFLINE_BACKBONES and full not in KERAS_APPLICATIONS:
        raise argparse.ArgumentTypeError(
            f"unknown backbone {name!r}; choose one of {', '.join(OFFLINE_BACKBONES)} "
            f"(offline weights) or {', '.join(sorted(KERAS_APPLICATIONS))} (needs internet)")
    return full


class CaptioningApp(App):
    """Image captioning with frozen CNN features and an Elman RNN decoder."""

    name = "captioning"
    description = (
        "Image captioning: frozen EfficientNet-Lite0 features -> an Elman RNN decoder with "
        "attention and an ImageNet word prior; beam search in the exported graph.\n"
        "Typical run: prepare, train, evaluate, export, then predict photo.jpg."
    )
    # No default for --data: a verb after train reads the data it was trained on from
    # run.json; train's own default is the Tux Paint data.
    defaults = {"epochs": 40, "batch_size": 64, "backbone": "efficientnet_lite0",
                "units": 512, "dropout": 0.3, "label_smoothing": 0.1, "imagenet_prior": None,
                "noun_prior": None,
                "beam_width": 3, "average_checkpoints": 3}
    quick = {"epochs": 8}
    data_help = ("tuxpaint (Tux Paint stamps, singles and scenes; train's default, later verbs "
                 "default to the data trained on), tuxpaint+svg, tuxpaint+emoji or "
                 "tuxpaint+svg+emoji (extra training drawings: Tux Paint's SVG stamps, "
                 "four licensed emoji art sets), flickr8k:PATH (Flickr8k.token.txt + images) "
                 "or coco:PATH (annotations/captions_*.json + images)")
    inputs = "file"
    inputs_help = "image files (JPEG, PNG, GIF, BMP)"
    signature_inputs = ("image_bytes",)

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        d = self.defaults
        if verb in ("prepare", "train"):
            parser.add_argument("--backbone", type=_backbone, default=None,
                                help="frozen CNN: efficientnet_lite0 or efficientnet_lite2 "
                                     "(lite0/lite2; offline weights) or a keras.applications "
                                     "name such as mobilenet_v2 (needs internet) "
                                     f"[default: {d['backbone']}]")
        if verb == "train":
            parser.add_argument("--dropout", type=float, default=None,
                                help=f"dropout on features and before the output "
                                     f"[default: {d['dropout']}]")
            parser.add_argument("--label-smoothing", type=float, default=None,
                                help=f"label smoothing of the token loss "
                                     f"[default: {d['label_smoothing']}]")
            parser.add_argument("--units", type=int, default=None,
                                help=f"RNN size [default: {d['units']}]")
            parser.add_argument("--average-checkpoints", type=int, default=None, metavar="N",
                                help="average the weights of the best epoch and the ones "
                                     "before it, up to N, when that names at least as many "
                                     "validation objects (Tux Paint data; 1: off; measured "
                                     "in docs/captioning.md) "
                                     f"[default: {d['average_checkpoints']}]")
            parser.add_argument("--imagenet-prior", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="mix the CNN's ImageNet classifier into the word "
                                     "distribution (copy prior; see docs/captioning.md) "
                                     "[default: on for the EfficientNet-Lite backbones]")
            parser.add_argument("--noun-prior", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="add one prior class per training head noun beside "
                                     "ImageNet's, fitted on the frozen features of the "
                                     "training single pictures (docs/captioning.md) "
                                     "[default: on with the ImageNet prior and head nouns]")
        if verb in ("evaluate", "export"):
            parser.add_argument("--beam-width", type=int, default=None,
                                help=f"beam size [default: {d['beam_width']}]")
        if verb == "evaluate":
            parser.add_argument("--split", choices=("test", "validation"), default="test",
                                help="the held-out split to caption; choices between "
                                     "variants are made on validation [default: test]")
        if verb == "predict":
            parser.add_argument("--plot", nargs="?", const="captions", default=None,
                                metavar="DIR",
                                help="also save each picture with its caption and attention "
                                     "maps as DIR/<name>.caption.png [default DIR: captions]")

    def prepare(self, run: Run) -> Mapping[str, Any]:
        prep = prepare_features(run.data, run.quick, run.limit, run.seed, run.backbone)
        counts: dict[str, Any] = {}
        for name, split in prep.splits.items():
            kinds = ", ".join(f"{k} {split.kinds.count(k)}" for k in sorted(set(split.kinds)))
            counts[name] = f"{len(split)} pictures ({kinds}); features {prep.grid[name].shape}"
        if formats.parse_data_spec(run.data)[0] == "tuxpaint":
            stamps, dropped = list_stamps(stamps_root())
            counts["stamps used"] = f"{len(stamps)}; dropped: {dropped}"
        return counts

    train = staticmethod(training.train)
    evaluate = staticmethod(evaluation.evaluate)
    gradient_probe = staticmethod(training.gradient_probe)
    servable = staticmethod(export.servable)
    predict = staticmethod(export.predict)


main = CaptioningApp.main
