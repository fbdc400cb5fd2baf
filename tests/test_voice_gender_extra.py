"""The Festival extra training voices: real synthesis, their pitch, and that they only ever
join the training side of a fold (never a test split)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from apps.voice_gender import data as vdata
from apps.voice_gender import festival, pipeline
from apps.voice_gender.features import clip_f0

VOICE = {v.name: v for v in festival.EXTRA_VOICES}


def _read_wav(path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)


def test_voice_set_is_class_balanced_and_installed():
    sexes = [v.sex for v in festival.EXTRA_VOICES]
    assert sexes.count("female") == sexes.count("male") == 5
    assert len({v.name for v in festival.EXTRA_VOICES}) == 10
    assert "festvox-czech-krb" not in festival.FESTIVAL_PACKAGES  # a child's voice
    festival.check_festival()  # `make system-deps` installs festival and every voice


@pytest.mark.parametrize("name", ["czech_dita", "kal_diphone"])
def test_synthesised_voice_lands_on_its_target_pitch(tmp_path, name):
    """Two real utterances of a female and a male voice: the F0 the app's estimator measures
    is the planned target (within 15 %), inside the adult range of the voice's sex."""
    voice = VOICE[name]
    low, high = festival.TARGET_F0_HZ[voice.sex]
    pool = festival.voice_sentences((voice,))[voice.help_lang]
    assert len(pool) > 1000  # plenty of real help sentences in the voice's language
    plan = festival.plan_voice(voice, pool, 2, seed=7)
    assert plan == festival.plan_voice(voice, pool, 2, seed=7)  # seeded
    assert all(low <= p["target_f0"] <= high for p in plan)
    out = festival.synthesize_voice(voice, plan, tmp_path / name)
    assert not list(tmp_path.glob(".*"))  # the temporary folder was renamed away
    again = festival.synthesize_voice(voice, plan, tmp_path / "again")
    rows = festival.extra_clip_rows(tmp_path, (voice,))
    assert [r[1:] for r in rows] == [(voice.sex, f"festival-{name}")] * 2
    for item in plan:
        wav = out / f"{item['index']:04d}.wav"
        assert wav.read_bytes() == (again / wav.name).read_bytes()  # deterministic
        rate, pcm = _read_wav(wav)
        assert rate == 16000
        assert 1.0 < len(pcm) / rate < 12.0
        f0 = float(clip_f0(pcm.astype(np.float32) / 32768.0))
        assert abs(f0 / item["target_f0"] - 1.0) < 0.15, (name, item, f0)
        assert 0.9 * low < f0 < 1.1 * high, f"{name}: median F0 {f0:.0f} Hz"


def test_missing_festival_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(festival.shutil, "which", lambda name: None)
    with pytest.raises(festival.FestivalError, match="Debian package 'festival'"):
        festival.check_festival()
    # A data error of the project: the command line prints it as one `error:` line.
    assert issubclass(festival.FestivalError, vdata.DataError)
    monkeypatch.undo()
    monkeypatch.setattr(festival, "FESTIVAL_VOICE_ROOT", tmp_path)
    with pytest.raises(festival.FestivalError, match="festvox-czech-dita"):
        festival.check_festival()


def test_extra_voices_defaults_and_class_check():
    assert pipeline.extra_voices_wanted("fillets", None)
    assert not pipeline.extra_voices_wanted("fillets", False)
    assert pipeline.extra_label_map(["female", "male"]) == [0, 1]
    assert pipeline.extra_label_map(["M", "F"]) == [1, 0]
    with pytest.raises(vdata.DataError, match="--no-extra-voices"):
        pipeline.extra_label_map(["blackbird", "robin"])


def test_folds_train_on_extra_voices_and_never_test_on_them():
    b = vdata.prepare(limit=24)
    extra = vdata.prepare_extra(festival.QUICK_PER_VOICE)
    n_extra = extra.info.splits[vdata.EXTRA_SPLIT].num_examples
    assert n_extra == festival.QUICK_PER_VOICE * len(festival.EXTRA_VOICES)
    names = vdata.class_names(b)
    expected_extra = {f"festival-{v.name}": names.index(v.sex) for v in festival.EXTRA_VOICES}
    folds = pipeline.folds_for(b)
    assert sorted(f["name"] for f in folds) == ["cs_to_nl", "final", "nl_to_cs"]
    for fold in folds:
        train_ex, val_ex = pipeline.fold_examples(b, fold, extra)
        seen: dict[str, set[int]] = {}
        count = 0
        for ex in train_ex.concatenate(val_ex).as_numpy_iterator():
            seen.setdefault(ex["speaker"].decode(), set()).add(int(ex["label"]))
            count += 1
        # Every extra voice trains (train + early-stopping part), with its own sex's label.
        assert {s: l.pop() for s, l in seen.items() if s.startswith("festival-")} == expected_extra
        fillets = {s for s in seen if s.startswith("fillets-")}
        assert fillets == {f"fillets-{lang}-{sex}" for lang in fold["train"] for sex in names}
        assert count == 24 * len(fold["train"]) + n_extra
        # Without extra voices the run is the Fillets clips alone.
        plain_train, plain_val = pipeline.fold_examples(b, fold, None)
        assert sum(1 for _ in plain_train.concatenate(plain_val)) == 24 * len(fold["train"])
        for split in fold["test"]:
            # The test side (what `evaluate` reads) holds the other language's actors only.
            test_speakers = {ex["speaker"].decode()
                             for ex in pipeline.load_examples(b, [split]).as_numpy_iterator()}
            assert test_speakers == {f"fillets-{split}-female", f"fillets-{split}-male"}
            assert split not in fold["train"]


def test_makefile_installs_festival_and_every_voice():
    """A fresh machine (CI) gets them from `make system-deps` (the APT_PACKAGES line)."""
    from pathlib import Path

    line = next(l for l in (Path(__file__).parents[1] / "Makefile").read_text().splitlines()
                if l.startswith("APT_PACKAGES"))
    assert set(festival.FESTIVAL_PACKAGES) <= set(line.split(":=", 1)[1].split())
