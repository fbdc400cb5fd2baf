"""benchmarks/voice_speaker_encoder.py: the fold scoring, and a clear error without the
encoder (the encoder itself needs PyTorch, which the project does not install)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "voice_speaker_encoder.py"


def _load():
    spec = importlib.util.spec_from_file_location("voice_speaker_encoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_holds_out_each_fold_and_scores_every_speaker():
    bench = _load()
    rng = np.random.default_rng(0)
    speakers = np.repeat([f"s{i}" for i in range(10)], 20)
    folds = np.repeat([f"fold{i % 5}" for i in range(10)], 20)
    labels = np.repeat([i % 2 for i in range(10)], 20)
    # Speaker 9 (male) sounds like the women: a linear probe must get him wrong.
    centre = np.where((labels == 1) & (speakers != "s9"), 1.0, -1.0)
    emb = centre[:, None] * np.ones((1, 4)) + 0.3 * rng.standard_normal((200, 4))
    bands = bench.score(emb, emb[:, ::-1], labels, folds, speakers, 1.0)
    assert sorted(bands) == ["full band", "telephone band"]
    for fold_acc, per_speaker in bands.values():
        assert len(fold_acc) == 5 and sorted(per_speaker) == sorted(set(speakers))
        assert per_speaker["s9"] < 0.1
        assert all(v > 0.9 for s, v in per_speaker.items() if s != "s9")
        assert fold_acc[4] < 0.6 < min(fold_acc[:4])  # s9 is tested in fold 4 only


def test_without_the_encoder_it_says_so():
    if importlib.util.find_spec("resemblyzer") is not None:
        pytest.skip("resemblyzer is importable here: the error path cannot be reached")
    out = subprocess.run([sys.executable, str(SCRIPT), "--encoder-python", sys.executable],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 2
    assert "cannot import resemblyzer" in out.stderr
