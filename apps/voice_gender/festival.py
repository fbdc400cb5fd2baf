"""Extra training speakers: Debian's Festival voices, synthesised at ``prepare`` time.

The Fillets data has one actor per language and class, so a model trained on one language
sees exactly one female and one male voice, and the female/male decision threshold it
learns is "between these two people". More speakers per class is the real fix. Festival's
voices are built from recordings of real speakers (diphone inventories, or HTS models
trained on a speaker's recordings), so each one carries a real person's vocal tract and a
speaker-typical pitch. Five female and five male voices (class-balanced, the same kinds of
languages on both sides) are added to the TRAINING side only: both cross-language folds
and the exported model. They are never in a test set and never give a reported accuracy.

Text: sentences of the LibreOffice help in each voice's own language (Debian
``libreoffice-help-<lang>``, 3 MB each, fetched with ``apt-get download``; the translation
app uses the same source). Not the Fillets dialogue: those lines are the test set's own
text, and each fish has its own lines, so text would correlate with the label there. A
female and a male voice of the same language draw from the same sentence pool, so the
words say nothing about the class.

Prosody: each utterance gets a seeded speaking-rate factor (Festival's
``Duration_Stretch``; HTS voices: the engine's ``-r`` rate) and a seeded target F0 drawn
over the adult range of the voice's sex (:data:`TARGET_F0_HZ`), reached with an F0 factor
relative to the voice's own pitch: the diphone voices' F0 targets are scaled after
``Int_Targets``, the Finnish voices' Fujisaki frequency range (``*f_min*``, ``*f_max*``) is scaled. The
two HTS voices keep their own pitch (~170-180 Hz): the engine's half-tone option did not
move their F0 here (measured). Festival resamples the output to 16 kHz, 16-bit WAV.

Cache: ``$RNNKIT_CACHE/festival_voices/<key>/<voice>/`` with ``<n>.wav`` and
``manifest.json``; each voice folder is written under a temporary name and renamed when
complete, so an interrupted ``prepare`` never leaves half a voice behind.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rnnkit.errors import DataError

# Bump when the voices, texts or prosody change: a new cache key and a retrain.
EXTRA_VERSION = "festival-v3-population-f0"
# Utterances per voice (full run): 400 clips, 85 % train and 15 % early stopping. Run 3
# (v1) used 60 and took 16.9 minutes in all; 40 (and 20 epochs) keeps `make voice-gender`
# within its 15-minute budget.
PER_VOICE = 40
QUICK_PER_VOICE = 4  # --quick / --limit runs
RATE_RANGE = (0.9, 1.12)  # Duration_Stretch factor (>1 slower), log-uniform
# Target speaking F0 of each utterance, log-uniform over the adult range of the voice's sex
# (Baken & Orlikoff, "Clinical Measurement of Speech and Voice", 2nd ed. 2000, p. 177:
# women 165-255 Hz, men 85-155 Hz). Festival's voices come with one fixed pitch setting
# each, and as shipped the five male voices sit at 75-114 Hz (below most men) and the
# Finnish female at ~140 Hz (run 3, measured by `features.clip_f0`): the population they drew
# put the F0 boundary near 130 Hz, where real men speak. Spreading each voice over its
# sex's range puts it where the published ranges meet (~160 Hz).
TARGET_F0_HZ = {"female": (165.0, 255.0), "male": (85.0, 155.0)}
F0_FACTOR_LIMITS = (0.6, 2.0)  # Festival's diphone pitch change stays clean within this
WORDS = (6, 14)  # sentence length in words (about 2-5 s of speech)
FESTIVAL_VOICE_ROOT = Path("/usr/share/festival/voices")


@dataclass(frozen=True)
class ExtraVoice:
    """One Festival voice used as an extra training speaker.

    Attributes:
        name: Festival's voice name (``voice_<name>`` selects it).
        package: the Debian package that installs it.
        sex: ``female`` or ``male``, from the package description (and the voice's
            README for cmu_us_slt_arctic_hts, whose Debian description omits it).
        help_lang: the LibreOffice help language of its text.
        encoding: the byte encoding its Festival front end reads (Festival is 8-bit).
        folder: its folder under /usr/share/festival/voices.
        natural_f0: its median F0 in Hz as shipped (60 utterances, measured with
            ``features.clip_f0``), the base of the pitch factor; ``None`` for the HTS voices,
            whose pitch Festival cannot move (they keep their own ~170-180 Hz).
        f0_power: how the voice's F0 responds to the factor (F0 ~ factor ** f0_power):
            2 for the Finnish voices, whose scaled targets and scaled Fujisaki range both
            apply (measured: a factor of 1.4 raised their F0 about 1.9 times).
    """

    name: str
    package: str
    sex: str
    help_lang: str
    encoding: str
    folder: str
    natural_f0: float | None
    f0_power: float = 1.0


EXTRA_VOICES: tuple[ExtraVoice, ...] = (
    ExtraVoice("czech_dita", "festvox-czech-dita", "female", "cs", "iso-8859-2",
               "czech/czech_dita", 219.0),
    ExtraVoice("lp_diphone", "festvox-italp16k", "female", "it", "iso-8859-1",
               "italian/lp_diphone", 206.0),
    ExtraVoice("suo_fi_lj_diphone", "festvox-suopuhe-lj", "female", "fi", "iso-8859-1",
               "finnish/suo_fi_lj_diphone", 140.0, 2.0),
    ExtraVoice("upc_ca_ona_hts", "festvox-ca-ona-hts", "female", "ca", "iso-8859-1",
               "catalan/upc_ca_ona_hts", None),
    ExtraVoice("cmu_us_slt_arctic_hts", "festvox-us-slt-hts", "female", "en-US", "ascii",
               "us/cmu_us_slt_arctic_hts", None),
    ExtraVoice("czech_machac", "festvox-czech-machac", "male", "cs", "iso-8859-2",
               "czech/czech_machac", 75.0),
    ExtraVoice("pc_diphone", "festvox-itapc16k", "male", "it", "iso-8859-1",
               "italian/pc_diphone", 114.0),
    ExtraVoice("hy_fi_mv_diphone", "festvox-suopuhe-mv", "male", "fi", "iso-8859-1",
               "finnish/hy_fi_mv_diphone", 85.0, 2.0),
    ExtraVoice("kal_diphone", "festvox-kallpc16k", "male", "en-US", "ascii",
               "english/kal_diphone", 103.0),
    ExtraVoice("ked_diphone", "festvox-kdlpc16k", "male", "en-US", "ascii",
               "english/ked_diphone", 103.0),
)
# Debian packages the extra voices need (festival itself plus each voice).
FESTIVAL_PACKAGES = ("festival",) + tuple(v.package for v in EXTRA_VOICES)


class FestivalError(DataError):
    """Festival or a voice is missing, or synthesis failed; the message names the fix."""


def check_festival(voices: tuple[ExtraVoice, ...] = EXTRA_VOICES) -> str:
    """Return the path of the ``festival`` binary, checking that every voice is installed.

    Raises:
        FestivalError: naming the Debian package(s) to install.
    """
    binary = shutil.which("festival")
    if binary is None:
        raise FestivalError("the extra training voices need Festival: install the Debian package "
                            "'festival' and the voices (`make system-deps`, or apt-get install "
                            + " ".join(FESTIVAL_PACKAGES) + "), or pass --no-extra-voices")
    missing = [v.package for v in voices if not (FESTIVAL_VOICE_ROOT / v.folder).is_dir()]
    if missing:
        raise FestivalError(f"Festival voice package(s) missing: {' '.join(missing)} "
                            f"(apt-get install {' '.join(missing)}, or pass --no-extra-voices)")
    return binary


# ----------------------------------------------------------------------------- text


# A plain sentence: starts with a letter, only letters, spaces, commas and apostrophes,
# ends with a full stop (no menu paths, digits, code or file names to read out).
_PLAIN = re.compile(r"^[^\W\d_][^\W\d_]*(?:,? [^\W\d_]+(?:['’][^\W\d_]+)?)*[.]$")


def help_sentences(lang: str, words: tuple[int, int] = WORDS) -> list[str]:
    """Plain sentences of the LibreOffice help in ``lang``, sorted and de-duplicated.

    Args:
        lang: help language folder name (``cs``, ``it``, ``fi``, ``ca``, ``en-US``).
        words: inclusive range of words per sentence.
    """
    from rnnkit.libreoffice_help import help_paragraphs, help_text_root

    try:
        root = help_text_root(lang)
    except FileNotFoundError as err:
        raise FestivalError(str(err)) from err
    found = set()
    for path in sorted(root.rglob("*.html")):
        for (ident, _), text in help_paragraphs(path).items():
            if not ident.startswith("par_id"):  # body paragraphs, not headings
                continue
            para = " ".join(text.split())
            for sentence in re.split(r"(?<=[.!?])\s+", para):
                tokens = sentence.split()
                # Skip words with inner capitals (function names such as "LogickáHodnota").
                if (words[0] <= len(tokens) <= words[1] and _PLAIN.match(sentence)
                        and not any(c.isupper() for t in tokens for c in t[1:])):
                    found.add(sentence.replace("’", "'"))
    return sorted(found)


def voice_sentences(voices: tuple[ExtraVoice, ...]) -> dict[str, list[str]]:
    """Sentence pool per help language: its own plain sentences that encode in the voice's
    charset, minus sentences also in the English help (untranslated strings).

    Args:
        voices: the voices whose languages are needed.
    """
    english = set(help_sentences("en-US"))
    pools = {}
    for voice in voices:
        if voice.help_lang in pools:
            continue
        pool = english if voice.help_lang == "en-US" else set(help_sentences(voice.help_lang)) - english
        pools[voice.help_lang] = sorted(s for s in pool if _encodes(s, voice.encoding))
    return pools


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------------------- synthesis

# Festival Scheme run once per voice. `Utterance` does not evaluate its arguments, hence
# the `eval`. Pitch: Int_Targets is wrapped so that the F0 targets it writes are scaled
# (diphone voices synthesise from those targets); the Finnish voices' Fujisaki contour lies
# between *f_min* and *f_max*, so both are scaled (f_min alone overshoots). Rate: Duration_Stretch (relative to the
# voice's own setting) and, for HTS voices, the engine's -r speed factor.
_PRELUDE = r"""
(set! rk_f0_scale 1.0)
(set! rk_orig_Int_Targets Int_Targets)
(define (Int_Targets utt)
  (rk_orig_Int_Targets utt)
  (mapcar (lambda (tg) (item.set_feat tg "f0" (* rk_f0_scale (item.feat tg "f0"))))
          (utt.relation.items utt 'Target))
  utt)
(set! rk_base_stretch (Parameter.get 'Duration_Stretch))
(if (not rk_base_stretch) (set! rk_base_stretch 1.0))
(set! rk_base_hts (if (boundp 'hts_engine_params) hts_engine_params nil))
(set! rk_base_fmin (if (boundp '*f_min*) *f_min* nil))
(set! rk_base_fmax (if (boundp '*f_max*) *f_max* nil))
(define (rk_say text path stretch scale)
  (set! rk_f0_scale scale)
  (if rk_base_fmin (set! *f_min* (* rk_base_fmin scale)))
  (if rk_base_fmax (set! *f_max* (* rk_base_fmax scale)))
  (Parameter.set 'Duration_Stretch (* rk_base_stretch stretch))
  (if rk_base_hts
      (set! hts_engine_params (append rk_base_hts (list (list "-r" (/ 1.0 stretch))))))
  (let ((utt (eval (list 'Utterance 'Text text))))
    (utt.synth utt)
    (utt.wave.resample utt 16000)
    (utt.save.wave utt path 'riff))
  (format t "rnnkit-done\n"))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plan_voice(voice: ExtraVoice, pool: list[str], count: int, seed: int) -> list[dict]:
    """The utterances of one voice: text, rate factor and target F0, all seeded.

    Each utterance gets a target F0 log-uniform over :data:`TARGET_F0_HZ` of the voice's sex;
    its F0 factor is target / the voice's ``natural_f0`` (within :data:`F0_FACTOR_LIMITS`),
    1 for voices whose pitch cannot be set.

    Args:
        voice: the voice.
        pool: its language's sentence pool.
        count: utterances to plan.
        seed: selection seed.
    """
    if len(pool) < count:
        raise FestivalError(f"only {len(pool)} {voice.help_lang} sentences for {voice.name}, "
                            f"need {count}")
    rng = random.Random(f"{seed}-{voice.name}")
    texts = rng.sample(pool, count)

    def log_uniform(lo: float, hi: float) -> float:
        return round(lo * (hi / lo) ** rng.random(), 4)

    plan = []
    for i, text in enumerate(texts):
        rate, target = log_uniform(*RATE_RANGE), log_uniform(*TARGET_F0_HZ[voice.sex])
        factor = 1.0
        if voice.natural_f0:
            factor = (target / voice.natural_f0) ** (1.0 / voice.f0_power)
            factor = round(min(max(factor, F0_FACTOR_LIMITS[0]), F0_FACTOR_LIMITS[1]), 4)
        plan.append({"index": i, "text": text, "rate": rate, "f0": factor,
                     "target_f0": target if voice.natural_f0 else None})
    return plan


def synthesize_voice(voice: ExtraVoice, plan: list[dict], dest: Path, progress=None) -> Path:
    """Synthesise one voice's planned utterances into ``dest`` (atomically, as a folder).

    Args:
        voice: the voice.
        plan: from :func:`plan_voice`.
        dest: the final folder; written as a hidden temporary sibling and renamed.
        progress: optional tqdm bar, advanced once per utterance.
    """
    from rnnkit.atomic import atomic_directory, atomic_write_json

    binary = check_festival((voice,))
    with atomic_directory(dest, overwrite=True) as tmp:
        lines = [f"(voice_{voice.name})", _PRELUDE]
        for item in plan:
            wav = tmp / f"{item['index']:04d}.wav"
            lines.append(f"(rk_say {_scheme_string(item['text'])} {_scheme_string(str(wav))} "
                         f"{item['rate']} {item['f0']})")
        script = tmp / "synth.scm"
        script.write_bytes("\n".join(lines).encode(voice.encoding))
        proc = subprocess.Popen([binary, "-b", str(script)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        done = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "rnnkit-done":
                done += 1
                if progress is not None:
                    progress.update(1)
        err = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0 or done != len(plan):
            raise FestivalError(f"festival failed on voice {voice.name} ({done}/{len(plan)} "
                                f"utterances, exit {proc.returncode}): {err.strip()[-500:]}")
        script.unlink()
        atomic_write_json(tmp / "manifest.json", {
            "voice": voice.name, "package": voice.package, "sex": voice.sex,
            "language": voice.help_lang, "version": EXTRA_VERSION, "utterances": plan})
    return dest


def cache_key(per_voice: int, seed: int, voices: tuple[ExtraVoice, ...] = EXTRA_VOICES) -> str:
    """Folder name of one set of extra voices (changes with any setting)."""
    text = json.dumps([EXTRA_VERSION, per_voice, seed, RATE_RANGE, TARGET_F0_HZ,
                       F0_FACTOR_LIMITS, WORDS,
                       [(v.name, v.natural_f0, v.f0_power) for v in voices]])
    return f"{EXTRA_VERSION}-{per_voice}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def synthesize_all(per_voice: int = PER_VOICE, seed: int = 1337,
                   voices: tuple[ExtraVoice, ...] = EXTRA_VOICES) -> Path:
    """Synthesise (or reuse) every extra voice; return the set's folder.

    Args:
        per_voice: utterances per voice.
        seed: text and prosody seed.
        voices: which voices.
    """
    from tqdm import tqdm

    from rnnkit.paths import cache_dir

    check_festival(voices)
    root = cache_dir() / "festival_voices" / cache_key(per_voice, seed, voices)
    todo = [v for v in voices if not (root / v.name / "manifest.json").exists()]
    if todo:
        pools = voice_sentences(todo)
        with tqdm(total=per_voice * len(todo), desc="synthesising Festival voices",
                  unit="utt") as bar:
            for voice in todo:
                bar.set_postfix_str(voice.name)
                synthesize_voice(voice, plan_voice(voice, pools[voice.help_lang], per_voice, seed),
                                 root / voice.name, bar)
    return root


def extra_clip_rows(root: Path, voices: tuple[ExtraVoice, ...] = EXTRA_VOICES) -> list[tuple[Path, str, str]]:
    """(wav path, sex, speaker) of every synthesised utterance under ``root``."""
    rows = []
    for voice in voices:
        manifest = json.loads((root / voice.name / "manifest.json").read_text())
        for item in manifest["utterances"]:
            rows.append((root / voice.name / f"{item['index']:04d}.wav", voice.sex,
                         f"festival-{voice.name}"))
    return rows
