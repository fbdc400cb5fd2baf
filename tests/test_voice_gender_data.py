"""voice_gender data: Fillets labels, the TFDS builder on real clips, user formats by speaker
(``formats.py``); their errors are the project's ``DataError``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_voice_gender_fixtures import synthesize

from apps.voice_gender import data as vdata
from apps.voice_gender import formats
from rnnkit.errors import DataError


@pytest.mark.parametrize("name,label", [
    ("vit-m-hlava.ogg", "female"),
    ("vit-v-proc.ogg", "male"),
    ("vit-hs-klid1.ogg", None),   # a side character
    ("cil-m-hlaska1.ogg", "female"),
    ("cely-m.ogg", None),         # not prefix-code-id
    ("help20.ogg", None),
    ("vit-m-hlava.wav", None),
])
def test_fillets_label(name, label):
    assert vdata.fillets_label(name) == label


def test_bad_specs_name_the_problem(tmp_path):
    assert vdata.DataError is DataError  # the app raises the project's data error
    with pytest.raises(DataError, match="FORMAT:PATH"):
        formats.parse_spec("nonsense:/x")
    with pytest.raises(DataError, match="does not exist"):
        formats.parse_spec(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="at least two class folders"):
        formats.user_clips("folder", tmp_path)
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("file,gender\na.wav,male\n")
    with pytest.raises(DataError, match="path,label,speaker"):
        formats.user_clips("csv", bad_csv)


def test_fillets_builder_on_real_subset():
    """The real fetch path (apt-get download + dpkg-deb -x), a few dozen real clips."""
    b = vdata.prepare(limit=24)
    assert vdata.split_names(b) == ["cs", "nl"]
    assert vdata.class_names(b) == ["female", "male"]
    for split in ("cs", "nl"):
        examples = list(b.as_dataset(split=split).as_numpy_iterator())
        assert len(examples) == 24
        labels = [int(e["label"]) for e in examples]
        assert labels.count(0) == labels.count(1) == 12
        for e in examples:
            audio = e["audio"]
            assert audio.dtype == np.int16 and audio.ndim == 1
            assert 0.2 * 16000 < len(audio) < 60 * 16000  # real dialogue lines
            assert np.abs(audio).max() > 500  # not silence
            gender = "female" if e["label"] == 0 else "male"
            assert e["speaker"].decode() == f"fillets-{split}-{gender}"
            assert f"/{split}/" in e["path"].decode()


def test_full_fillets_listing_matches_published_counts():
    clips = vdata.fillets_clips(vdata.fetch_fillets())
    counts = {(g, lab): 0 for g in ("cs", "nl") for lab in ("female", "male")}
    for c in clips:
        counts[(c.group, c.label)] += 1
    assert counts == {("cs", "female"): 682, ("cs", "male"): 643,
                      ("nl", "female"): 681, ("nl", "male"): 642}


@pytest.fixture(scope="module")
def espeak_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("espeak")
    rows = synthesize(root, per_voice=1, seed=1)
    return root, rows


def test_folder_format_splits_by_speaker(espeak_folder):
    root, rows = espeak_folder
    clips = formats.user_clips("folder", root)
    assert sorted({c.label for c in clips}) == ["female", "male"]  # from the folder names
    assert len(clips) == len(rows)
    split_of = {}
    for c in clips:
        assert split_of.setdefault(c.speaker, c.group) == c.group  # one split per speaker
    groups = {c.group for c in clips}
    assert groups == {"train", "validation", "test"}
    for g in groups:  # every split sees both classes (there are >= 3 speakers per class)
        assert {c.label for c in clips if c.group == g} == {"female", "male"}


def test_csv_and_corpus_formats(espeak_folder, tmp_path):
    _root, rows = espeak_folder
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker"])
        for path, label, spk in rows:
            w.writerow([path, label, spk])
    clips = formats.user_clips("csv", tmp_path / "list.csv")
    assert {(c.path, c.label, c.speaker) for c in clips} == {(p, lab, s) for p, lab, s in rows}

    # Common Voice: validated.tsv + clips/, newer gender values, unlabelled rows dropped.
    cv = tmp_path / "cv"
    (cv / "clips").mkdir(parents=True)
    lines = ["client_id\tpath\tsentence\tgender"]
    for i, (path, label, spk) in enumerate(rows):
        (cv / "clips" / f"{i}.wav").write_bytes(path.read_bytes())
        lines.append(f"{spk}\t{i}.wav\ttext\t{label}_{'masculine' if label == 'male' else 'feminine'}")
    lines.append("anon\tnone.wav\ttext\t")
    (cv / "validated.tsv").write_text("\n".join(lines) + "\n")
    clips = formats.user_clips("commonvoice", cv)
    assert len(clips) == len(rows) and {c.label for c in clips} == {"female", "male"}

    # LibriSpeech: SPEAKERS.TXT + subset/speaker/chapter/*.flac
    ls = tmp_path / "LibriSpeech"
    ls.mkdir()
    speakers = sorted({(spk, label) for _, label, spk in rows})
    txt = [";ID |SEX| SUBSET | MINUTES | NAME"]
    for n, (spk, label) in enumerate(speakers):
        txt.append(f"{100 + n} | {'M' if label == 'male' else 'F'} | dev-clean | 1.0 | {spk}")
        src = next(p for p, _, s in rows if s == spk)
        import soundfile as sf

        audio, sr = sf.read(src)
        out = ls / "dev-clean" / str(100 + n) / "1"
        out.mkdir(parents=True)
        sf.write(out / f"{100 + n}-1-0000.flac", audio, sr)
    (ls / "SPEAKERS.TXT").write_text("\n".join(txt) + "\n")
    clips = formats.user_clips("librispeech", ls)
    assert len(clips) == len(speakers)
    assert {c.label for c in clips} == {"female", "male"}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_audio_names_non_finite_samples(tmp_path, bad):
    """A float WAV with NaN or Inf samples is a data error naming the file, not a crash
    inside the model's graph."""
    import soundfile as sf

    path = tmp_path / "bad.wav"
    clip = np.full(8000, 0.1, np.float32)
    clip[100] = bad
    sf.write(path, clip, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=f"{path}: the audio contains NaN or Inf samples"):
        vdata.load_audio(path)
    sf.write(path, np.nan_to_num(clip, posinf=0.0), 16000, subtype="FLOAT")
    assert np.isfinite(vdata.load_audio(path)).all()
