"""What pitch alone says about the real speakers: a fixed clip-F0 threshold, fold by fold.

Each clip of the app's real-speaker folds (``rnnkit voice_gender prepare``, cached) gets
its median F0 from the model's own estimator (``features.clip_f0``, first 8 s); a clip
above the threshold is called female. Nothing is fitted: the default threshold, 165 Hz,
is the lower edge of the adult female speaking range the app's documentation cites
(Baken & Orlikoff, 165-255 Hz). Prints the balanced accuracy per fold and their mean (the
figure ``evaluate`` prints for the model), and every speaker's median F0.

    python benchmarks/voice_pitch_rule.py [--threshold 165]

(from the repository root). Why it matters: if acted voices cross the population
boundary, no pitch rule can separate them and the model has to hear timbre too.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from apps.voice_gender import data, pipeline
from apps.voice_gender.features import SAMPLE_RATE, clip_f0

SECONDS = 8  # F0 of the first seconds: long lines add time, not information


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=165.0,
                        help="F0 in Hz above which a clip is called female [165]")
    args = parser.parse_args()
    b = data.prepare(data.REAL_SPEC, None, 1337)
    names = data.class_names(b)
    female = names.index("female")
    per_fold, per_speaker = [], defaultdict(list)
    for split in data.split_names(b):
        right: dict[int, list[bool]] = defaultdict(list)
        for ex in tqdm(pipeline.load_examples(b, [split]).as_numpy_iterator(),
                       desc=f"clip F0 {split}", unit="clip"):
            audio = ex["audio"][: SECONDS * SAMPLE_RATE].astype(np.float32) / 32768.0
            f0 = float(clip_f0(tf.constant(audio)))
            label = int(ex["label"])
            # A clip with no measurable pitch gets no vote: it counts as wrong.
            said_female = f0 > args.threshold if f0 > 0 else label != female
            right[label].append(said_female == (label == female))
            if f0 > 0:
                per_speaker[(ex["speaker"].decode(), names[label])].append(f0)
        bal = float(np.mean([np.mean(v) for v in right.values()]))
        per_fold.append(bal)
        print(f"{split}: balanced accuracy {bal:.3f}")
    print(f"mean balanced accuracy over folds (F0 > {args.threshold:g} Hz -> female): "
          f"{np.mean(per_fold):.3f}")
    print("speaker median F0 (Hz), low to high:")
    for (spk, sex), f0s in sorted(per_speaker.items(), key=lambda kv: np.median(kv[1])):
        print(f"  {spk:32s} {sex:6s} {len(f0s):4d} clips  {np.median(f0s):5.0f}")


if __name__ == "__main__":
    main()
