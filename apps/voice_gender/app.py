"""``rnnkit voice_gender prepare|train|evaluate|predict|export`` (also ``python -m apps.voice_gender``).

Defaults train on every documented real speaker (``--data real``: 64 speakers from eight
Debian packages, five speaker-disjoint folds, then the exported model on all of them);
``--data fillets`` is the Fish Fillets NG cs<->nl setup (with the Festival extra voices);
``--data FORMAT:PATH`` takes user data (see ``formats.py``). ``--quick`` uses
:data:`QUICK_LIMIT` clips per split (fold or language) and a few epochs: the whole app end
to end in a few minutes (figures from it mean nothing).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rnnkit.app import App, Run

from . import data, export
from . import evaluate as evaluation
from . import train as training
from .formats import REAL_SPEC, USER_FORMATS

#: Epoch limit of every run, sized so that ``make voice-gender`` (5 folds + final on about
#: 3,300 clips) fits its 25-minute budget (an estimate, docs/voice_gender.md); chosen on
#: fold0's early-stopping clips (a 20-epoch run of fold0 had its validation accuracy at
#: 0.963 after 12 epochs, best 0.968), never on a test fold. The Fillets figures of
#: docs/voice_gender.md were measured with 20-30.
EPOCHS = 12
QUICK_LIMIT = 60  # --quick: clips per split (5 fold splits for real, 2 languages for Fillets)
#: Lowest and highest frequency the log-mel front end listens to (``--fmin``,
#: ``--fmax``), in Hz.
FMIN = 0.0
FMAX = 4000.0
#: Whether every training speaker weighs the same in the loss (``--speaker-balance``).
SPEAKER_BALANCE = False
#: Share of training views heard from the clip's pitch-moved copy, formants kept
#: (``--pitch-prob``, :mod:`.resynth`).
PITCH_PROB = 0.0


def _number_in(low: float, high: float, what: str = "a number", unit: str = ""):
    """An argparse type: a float from ``low`` to ``high``, refused by name otherwise.

    Args:
        low: the smallest value allowed.
        high: the largest value allowed.
        what: what the text should be, for the message ("a frequency in Hz").
        unit: the unit after the bounds in the message (" Hz").
    """
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be from {low:g} to {high:g}{unit}, got {value:g}")
        return value

    return parse


# --fmax: 1 to 8 kHz (the 16 kHz waveform's Nyquist limit); --fmin: 0 to 1 kHz (a higher
# edge would cut into the first formant of most vowels); --pitch-prob: a share.
_band_edge = _number_in(1000, 8000, "a frequency in Hz", " Hz")
_low_edge = _number_in(0, 1000, "a frequency in Hz", " Hz")
_share = _number_in(0.0, 1.0)


class VoiceGenderApp(App):
    """Speaker gender (or any audio classes) from raw speech with a plain Elman RNN."""

    name = "voice_gender"
    description = (
        "Speaker gender (or any audio classes) from raw speech with a plain Elman RNN over "
        "log-mel frames computed inside the graph. Default data: 64 documented real speakers "
        "from eight Debian packages, evaluated in 5 speaker-disjoint folds."
    )
    defaults = {"data": REAL_SPEC, "epochs": EPOCHS, "batch_size": 32, "patience": 6,
                "fmin": FMIN, "fmax": FMAX, "speaker_balance": SPEAKER_BALANCE,
                "pitch_prob": PITCH_PROB}
    quick = {"epochs": 3, "limit": QUICK_LIMIT, "patience": 2}
    data_help = ("data: 'real' (default: every documented real speaker, 5 speaker-disjoint "
                 "folds), 'fillets' (the Fish Fillets NG actors, cs<->nl) or FORMAT:PATH "
                 "with FORMAT one of "
                 + ", ".join(USER_FORMATS))
    inputs = "file"
    inputs_help = "audio files (any format librosa reads: wav, flac, ogg, mp3, ...)"
    signature_inputs = ("waveform", "length")

    def add_arguments(self, verb: str, parser: argparse.ArgumentParser) -> None:
        if verb in ("prepare", "train"):
            group = parser.add_mutually_exclusive_group()
            group.add_argument("--extra-voices", dest="extra_voices", action="store_true",
                               default=None,
                               help="add the Festival voices (5 female, 5 male) as extra "
                                    "TRAINING speakers [default: on for --data real and "
                                    "fillets, off for FORMAT:PATH data, whose classes must "
                                    "then be female/male]")
            group.add_argument("--no-extra-voices", dest="extra_voices", action="store_false",
                               help="train on the dataset's own speakers only")
        if verb == "train":
            parser.add_argument("--patience", type=int, default=None,
                                help=f"early-stopping patience in epochs "
                                     f"[default: {self.defaults['patience']}]")
            parser.add_argument("--fmin", type=_low_edge, default=None, metavar="HZ",
                                help=f"lowest frequency of the log-mel filter bank, 0-1000 Hz "
                                     f"(300 with --fmax 3400: the telephone band) "
                                     f"[default: {self.defaults['fmin']:g}]")
            parser.add_argument("--fmax", type=_band_edge, default=None, metavar="HZ",
                                help=f"highest frequency of the log-mel filter bank, 1000-8000 "
                                     f"Hz (the pitch cues always use the whole band) "
                                     f"[default: {self.defaults['fmax']:g}]")
            parser.add_argument("--speaker-balance", dest="speaker_balance",
                                action=argparse.BooleanOptionalAction, default=None,
                                help="weigh every training speaker the same in the loss "
                                     "(each class still weighs the same) instead of every "
                                     f"clip [default: {'on' if self.defaults['speaker_balance'] else 'off'}]")
            parser.add_argument("--pitch-prob", dest="pitch_prob", type=_share, default=None,
                                metavar="P",
                                help="hear a share P of the training views from a copy of "
                                     "the clip re-spoken at a random pitch median (90-280 Hz) "
                                     "with its formants kept (Praat PSOLA, made once and "
                                     "cached), so that pitch alone cannot tell the class "
                                     f"[default: {self.defaults['pitch_prob']:g}]")

    def prepare(self, run: Run) -> Mapping[str, Any]:
        from .pipeline import extra_voices_for

        b = data.prepare(run.data, run.limit, run.seed)
        extra = extra_voices_for(run, b)
        counts: dict[str, Any] = {split: f"{info.num_examples} clips"
                                  for split, info in sorted(b.info.splits.items())}
        counts["classes"] = ", ".join(data.class_names(b))
        counts["data"] = str(b.data_dir)
        if extra is not None:
            counts["extra training voices (Festival, never tested on)"] = (
                f"{extra.info.splits[data.EXTRA_SPLIT].num_examples} clips in {extra.data_dir}")
        return counts

    train = staticmethod(training.train)
    evaluate = staticmethod(evaluation.evaluate)
    gradient_probe = staticmethod(evaluation.gradient_probe)
    servable = staticmethod(export.servable)
    predict = staticmethod(export.predict)


main = VoiceGenderApp.main
