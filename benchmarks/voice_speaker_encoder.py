"""What a practitioner would pick instead of training a voice model: a speaker encoder
pretrained on thousands of speakers, with a logistic regression on top, scored on the
voice app's own speaker-disjoint folds.

The encoder is Resemblyzer's (PyPI ``resemblyzer``: a GE2E speaker-verification LSTM
trained on LibriSpeech and VoxCeleb 1 and 2, its weights inside the wheel). It needs
PyTorch, which the project does not depend on, so it runs in an interpreter of its own::

    python -m venv /tmp/encoder-venv
    /tmp/encoder-venv/bin/pip install resemblyzer "setuptools<70"   # about 6 GB with torch
    python benchmarks/voice_speaker_encoder.py --encoder-python /tmp/encoder-venv/bin/python

(from the repository root, in the project's environment). It reads the documented real
clips and their folds through :func:`apps.voice_gender.data.real_fold_clips` (the same
clips ``rnnkit voice_gender evaluate`` scores), has the encoder embed each clip (full band,
and the telephone band the app's evaluation uses), then for each fold fits a
class-balanced logistic regression on the other folds' embeddings and scores the fold.
It prints balanced accuracy per fold, the per-speaker mean and the speakers under 0.80,
for three regularisation strengths (a report of all three, not a choice among them).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def embed_worker(waves_npz: str, out_npy: str) -> None:
    """Runs in the encoder's interpreter: every waveform of ``waves_npz`` -> one embedding."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    waves = np.load(waves_npz)
    encoder = VoiceEncoder("cpu")
    out = []
    for i in range(len(waves.files)):
        wav = waves[f"w{i}"].astype(np.float32)
        trimmed = preprocess_wav(wav, source_sr=16000)
        # Resemblyzer's voice-activity trim can leave almost nothing of a one-letter clip.
        out.append(encoder.embed_utterance(trimmed if len(trimmed) >= 1600 else wav))
        if i % 500 == 0:
            print(f"  embedded {i} of {len(waves.files)}", flush=True)
    np.save(out_npy, np.stack(out))


def embed(python: str, waves: list[np.ndarray], tmp: Path, name: str) -> np.ndarray:
    """Embed ``waves`` with the encoder in the interpreter ``python`` (:func:`embed_worker`,
    through files in ``tmp``): ``(len(waves), 256)``."""
    npz, npy = tmp / f"{name}.npz", tmp / f"{name}.npy"
    np.savez(npz, **{f"w{i}": w for i, w in enumerate(waves)})
    subprocess.run([python, __file__, "--worker", str(npz), str(npy)], check=True)
    return np.load(npy)


def score(full: np.ndarray, phone: np.ndarray, labels: np.ndarray, folds: np.ndarray,
          speakers: np.ndarray, c: float) -> dict[str, tuple[list[float], dict[str, float]]]:
    """Per-fold balanced accuracy and per-speaker share right of a logistic regression
    trained on the other folds, for the full-band and the telephone-band embeddings; the
    same metric functions as ``rnnkit voice_gender evaluate``.

    Returns:
        ``{"full band": (fold accuracies, {speaker: share right}), "telephone band": ...}``.
    """
    from sklearn.linear_model import LogisticRegression

    from apps.voice_gender.data import GENDER_CLASSES
    from apps.voice_gender.evaluate import classification_metrics, speaker_metrics

    names = list(GENDER_CLASSES)
    out: dict[str, tuple[list[float], dict[str, float]]] = {
        "full band": ([], {}), "telephone band": ([], {})}
    for f in sorted(set(folds)):
        test = folds == f
        probs = {}
        for band, emb in (("full band", full), ("telephone band", phone)):
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
            clf.fit(emb[~test], labels[~test])
            probs[band] = clf.predict_proba(emb[test])
            out[band][0].append(
                classification_metrics(labels[test], probs[band], names)["balanced_accuracy"])
        for spk, row in speaker_metrics(labels[test], probs["full band"],
                                        probs["telephone band"], speakers[test], names).items():
            out["full band"][1][spk] = row["right"]
            out["telephone band"][1][spk] = row["telephone_right"]
    return out


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        embed_worker(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder-python", required=True,
                        help="an interpreter that can import resemblyzer")
    args = parser.parse_args()
    check = subprocess.run([args.encoder_python, "-c", "import resemblyzer"], check=False,
                           capture_output=True, text=True)
    if check.returncode != 0:
        print(f"error: {args.encoder_python} cannot import resemblyzer "
              f"({check.stderr.strip().splitlines()[-1] if check.stderr else 'no output'}); "
              "see this file's docstring", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from apps.voice_gender import augment, data

    started = time.time()
    clips = data.real_fold_clips(1337)
    waves, phone = [], []
    for clip in tqdm(clips, desc="decoding", mininterval=10):
        wav = data.load_audio(clip.path).astype(np.float32)
        waves.append(wav)
        phone.append(np.asarray(augment.telephone(wav), np.float32))
    labels = np.array([data.GENDER_CLASSES.index(c.label) for c in clips], dtype=np.int64)
    folds = np.array([c.group for c in clips])
    speakers = np.array([c.speaker for c in clips])
    with tempfile.TemporaryDirectory() as tmp:
        full = embed(args.encoder_python, waves, Path(tmp), "full")
        phone_emb = embed(args.encoder_python, phone, Path(tmp), "phone")
    print(f"{len(clips)} clips, {len(set(speakers))} speakers, {len(set(folds))} folds "
          f"({time.time() - started:.0f} s)")
    results = {c: score(full, phone_emb, labels, folds, speakers, c) for c in (0.1, 1.0, 10.0)}
    for band in ("full band", "telephone band"):
        for c, by_band in results.items():
            fold_acc, per_speaker = by_band[band]
            low = sorted((v, s) for s, v in per_speaker.items() if v < 0.8)
            print(f"{band}, C = {c}: folds {' '.join(f'{a:.3f}' for a in fold_acc)}; "
                  f"mean {np.mean(fold_acc):.3f}; speaker mean "
                  f"{np.mean(list(per_speaker.values())):.3f}; {len(low)} of "
                  f"{len(per_speaker)} speakers under 0.80")
            if c == 1.0:
                print("  under 0.80: " + ", ".join(f"{s} {v:.2f}" for v, s in low))
    return 0


if __name__ == "__main__":
    sys.exit(main())
