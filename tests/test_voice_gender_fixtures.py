"""Synthetic speech fixtures for the voice_gender tests: espeak-ng voices, seeded.

espeak-ng's English male variants (en+m1..en+m7) and female variants (en+f1..en+f5)
speak a few sentences with seeded pitch and speed; the output is byte-identical run to run.
Synthetic voices are far easier than real ones: the tests use them to check that training
*works* (loss falls, formats parse), never to report an accuracy.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

MALE_VOICES = [f"m{i}" for i in range(1, 8)]
FEMALE_VOICES = [f"f{i}" for i in range(1, 6)]
SENTENCES = [
    "The small fish swims under the old wreck.",
    "Please move the steel pipe to the left.",
    "We have to find the way out of this room.",
    "Nobody told me the water would be this cold.",
    "Look at that strange shell on the sand.",
    "I think the crab is sleeping again.",
]


def espeak_binary() -> str | None:
    """Path of espeak-ng (installed by `make setup`), or None."""
    return shutil.which("espeak-ng")


def synthesize(root: Path, per_voice: int = 2, seed: int = 0) -> list[tuple[Path, str, str]]:
    """Write ``root/<gender>/<voice>/<n>.wav`` clips; return (path, label, speaker) rows.

    Args:
        root: output folder (the ``folder:`` user format).
        per_voice: clips per voice variant.
        seed: pitch/speed/sentence seed.
    """
    exe = espeak_binary()
    if exe is None:
        pytest.skip("espeak-ng is not installed (run `make setup` or apt-get install -y espeak-ng)")
    rng = random.Random(seed)
    rows = []
    for label, voices in (("male", MALE_VOICES), ("female", FEMALE_VOICES)):
        for voice in voices:
            folder = root / label / voice
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_voice):
                path = folder / f"{n}.wav"
                pitch, speed = rng.randint(35, 65), rng.randint(140, 180)
                text = rng.choice(SENTENCES)
                subprocess.run([exe, "-v", f"en+{voice}", "-p", str(pitch), "-s", str(speed),
                                "-w", str(path), text], check=True, capture_output=True)
                rows.append((path, label, voice))
    return rows


def test_synthesis_is_deterministic(tmp_path):
    a = synthesize(tmp_path / "a", per_voice=1, seed=3)
    b = synthesize(tmp_path / "b", per_voice=1, seed=3)
    assert len(a) == len(MALE_VOICES) + len(FEMALE_VOICES)
    for (pa, la, sa), (pb, lb, sb) in zip(a, b):
        assert (la, sa) == (lb, sb)
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.stat().st_size > 10_000  # real audio, not an empty header
