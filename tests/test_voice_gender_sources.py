"""voice_gender real-voice readers on real package files (the real fetch path, cached)."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from apps.voice_gender import sources
from apps.voice_gender.sources import amazon_queen, base, drascula, klettres, ktuberling
from apps.voice_gender.speakers import EXCLUDED, SPEAKERS, is_reserved, speaker


@pytest.fixture(scope="module")
def klettres_root():
    return base.fetch_package(klettres.PACKAGE) / klettres.SOUNDS_DIR


# ----------------------------------------------------------------------------- table


def test_speaker_table_is_documented_and_excludes_the_excluded():
    admitted = {s.id for s in SPEAKERS}
    for s in SPEAKERS:
        assert s.sex in ("female", "male") and len(s.document) > 20, s
        assert not is_reserved(s.package)
    # Children, TTS and ambiguous credits are not admitted under any id.
    for ex in EXCLUDED:
        assert ex.key not in admitted, ex
    for lang in ("ar", "pt_BR", "nn", "es", "it", "nl", "de", "en_GB", "ru"):
        assert f"klettres-{lang}" not in admitted
    assert {s.id for s in SPEAKERS if s.source == "klettres" and s.sex == "female"} == \
        {"klettres-cs"}
    with pytest.raises(KeyError, match="no documented speaker 'klettres-it'"):
        speaker("klettres-it")


def test_reserved_packages_are_refused_before_any_download():
    assert is_reserved("codec2-examples") and is_reserved("asterisk-core-sounds-en-wav")
    assert not is_reserved("klettres-data")
    with pytest.raises(base.SourceError, match="reserved as an independent test set"):
        base.fetch_package("codec2-examples")
    with pytest.raises(base.SourceError, match="reserved"):
        base.fetch_package("asterisk-prompt-fr-armelle")


# ----------------------------------------------------------------------------- KLettres


def test_klettres_index_reads_real_files(klettres_root):
    files = klettres.indexed_files(klettres_root, "cs")
    assert len(files) == len(set(files)) >= 40
    assert all(f.suffix == ".ogg" and f.is_file() for f in files)
    # ml's index lists one file twice (khi.ogg); it is read once.
    ml = klettres.indexed_files(klettres_root, "ml")
    assert len(ml) == len(set(ml))
    with pytest.raises(base.SourceError, match="no .*sounds.xml"):
        klettres.indexed_files(klettres_root, "xx")


def test_klettres_clips_are_the_admitted_languages_only(klettres_root):
    clips = klettres.clips(klettres_root.parents[2])
    by_speaker = Counter(c.speaker for c in clips)
    assert set(by_speaker) == {s.id for s in SPEAKERS if s.source == "klettres"}
    for c in clips:
        lang = c.path.relative_to(klettres_root).parts[0]
        assert c.speaker == f"klettres-{lang}"
        assert c.label == speaker(c.speaker).sex
    # A letter decodes to a short mono clip at the app's 16 kHz.
    audio = sources.load(clips[0])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.2 < len(audio) / 16_000 < 5.0
    assert np.abs(audio).max() > 0.05


# ----------------------------------------------------------------------------- Drascula


def test_drascula_file_names():
    assert drascula.parse_name("BJ12.ALS") == ("BJ", 12)
    assert drascula.parse_name("463.ALS") == ("", 463)
    assert drascula.parse_name("vb3.als") == ("VB", 3)
    assert drascula.parse_name("AN7_3.ALG") is None
    assert drascula.parse_name("S10.ALS") == ("S", 10)
    assert "S" not in drascula.DRASCULA_PREFIXES and "E" not in drascula.DRASCULA_PREFIXES


def test_drascula_als_reads_real_speech():
    root = base.fetch_package("drascula") / drascula.DATA_DIR / "en"
    path = root / "BJ1.ALS"
    pcm = drascula.read_als(path)
    assert pcm.dtype == np.int16
    assert len(pcm) == path.stat().st_size - drascula.ALS_HEADER - drascula.ALS_TRAILER
    assert 1.0 < len(pcm) / drascula.ALS_RATE < 30.0
    assert np.abs(pcm).max() > 3000  # speech, not the 0x80 silence of the header


def test_drascula_casts_decode_and_share_no_recording():
    clips = drascula.clips()
    by_cast = Counter(c.language for c in clips)
    assert by_cast["en"] > 700 and by_cast["es"] > 700
    assert set(Counter(c.speaker for c in clips)) == {s.id for s in SPEAKERS
                                                      if s.source == "drascula"}
    assert {c.speaker for c in clips if c.label == "female"} == {"drascula-en-bj",
                                                                 "drascula-es-bj"}
    # Spanish files that Debian links to the English recordings are not read twice.
    es = base.fetch_package("drascula-spanish") / drascula.DATA_DIR / "es"
    linked = [p for p in es.glob("*.ALS") if p.is_symlink()]
    assert linked and not any(c.path.stem == p.stem for p in linked for c in clips
                              if c.language == "es")
    # No recording (decoded samples) sits in both casts: the casts are separate fold groups.
    digests = {}
    for c in clips:
        data, rate = sf.read(c.path, dtype="int16")
        assert rate == drascula.ALS_RATE
        d = hashlib.sha1(data.tobytes()).hexdigest()
        other = digests.setdefault(d, c)
        assert other.group == c.group, (other.path, c.path)
    # A decoded line loads at the app's rate.
    audio = sources.load(clips[0])
    assert audio.dtype == np.float32 and len(audio) > 16_000 // 4


# ----------------------------------------------------------------------------- Amazon Queen


@pytest.fixture(scope="module")
def queen_data():
    return (base.fetch_package(amazon_queen.PACKAGE) / amazon_queen.RESOURCE).read_bytes()


def test_amazon_queen_index_and_dialogue_keys(queen_data):
    index = amazon_queen.read_index(queen_data)
    assert sum(n.endswith(".SB") for n in index) == 6745  # ../shared/DATA.md's count
    keys = amazon_queen.talk_keys(queen_data, index)
    assert keys[18] == "FAYE2.DOG" and keys[2] == "AND1.DOG"
    assert set(keys.values()) == {n for n in index if n.endswith(".DOG")}
    with pytest.raises(base.SourceError, match="QTBL"):
        amazon_queen.read_index(b"RIFF" + queen_data[4:100])


def test_amazon_queen_line_speakers(queen_data):
    keys = amazon_queen.talk_keys(queen_data, amazon_queen.read_index(queen_data))
    assert amazon_queen.line_character("180006P1.SB", keys) == "faye"     # FAYE2.DOG person
    assert amazon_queen.line_character("18XXXXP1.SB", keys) == "faye"
    assert amazon_queen.line_character("180006J1.SB", keys) == "joe"      # Joe's reply
    assert amazon_queen.line_character("JOE02431.SB", keys) == "joe"
    assert amazon_queen.line_character("020006P1.SB", keys) is None       # AND1: not admitted
    assert amazon_queen.line_character("C21T_042.SB", keys) is None       # cutaway
    assert amazon_queen.line_character("18SSSSSS.SB", keys) is None


def test_amazon_queen_clips_decode(queen_data):
    clips = amazon_queen.clips()
    by_speaker = Counter(c.speaker for c in clips)
    assert set(by_speaker) == {s.id for s in SPEAKERS if s.source == "amazon_queen"}
    assert by_speaker["amazon_queen-faye"] > 50 and by_speaker["amazon_queen-joe"] > 1000
    assert {c.group for c in clips} == {"amazon_queen"}
    faye = next(c for c in clips if c.speaker == "amazon_queen-faye")
    data, rate = sf.read(faye.path, dtype="int16")
    assert rate == 11_025 and np.abs(data).max() > 3000
    audio = sources.load(faye)
    assert audio.dtype == np.float32 and abs(len(audio) / 16_000 - len(data) / rate) < 0.01


# ----------------------------------------------------------------------------- KTuberling


def test_ktuberling_reads_only_the_documented_german_set(tmp_path):
    root = base.fetch_package(ktuberling.PACKAGE)
    clips = ktuberling.clips(root)
    assert len(clips) == 72 and {c.speaker for c in clips} == {"ktuberling-de"}
    assert {c.label for c in clips} == {"male"}
    audio = sources.load(clips[0])
    assert audio.dtype == np.float32 and 0.2 < len(audio) / 16_000 < 5.0
    # A set that is not byte-for-byte the documented one is refused, not labelled.
    copy = tmp_path / ktuberling.SOUNDS_DIR / "de"
    copy.mkdir(parents=True)
    for c in clips:
        (copy / c.path.name).write_bytes(c.path.read_bytes())
    assert len(ktuberling.clips(tmp_path)) == 72
    (copy / "ball.ogg").write_bytes((copy / "bow.ogg").read_bytes())
    with pytest.raises(base.SourceError, match="not the 72 its recording credit documents"):
        ktuberling.clips(tmp_path)


# ----------------------------------------------------------------------------- all


def test_real_clips_cover_every_documented_speaker():
    clips = sources.real_clips()
    assert {c.speaker for c in clips} == {s.id for s in SPEAKERS}
    for c in clips[:: max(1, len(clips) // 200)]:
        assert c.label == speaker(c.speaker).sex and c.group == speaker(c.speaker).group
    rows = sources.provenance_rows([c for c in clips if c.source == "klettres"])
    assert [r.speaker.id for r in rows] == [s.id for s in SPEAKERS if s.source == "klettres"]
    assert all(r.clips > 0 and r.minutes > 0 for r in rows)
    table = sources.provenance_markdown(rows)
    assert "`klettres-cs`" in table and "Eva Mikulčíková" in table
    with pytest.raises(base.SourceError, match="unknown voice source"):
        sources.real_clips(["nonsense"])
    # One clip of each source through the record and builder-row conversions.
    sample = [next(c for c in clips if c.source == name) for name in sources.READERS]
    for (audio, label, spk, source, language), c in zip(sources.records(sample), sample):
        assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 1600
        assert (label, spk, source, language) == (c.label, c.speaker, c.source, c.language)
    rows = sources.as_data_clips(sample)
    assert [(r.path, r.label, r.speaker, r.group) for r in rows] == \
        [(c.path, c.label, c.speaker, c.source) for c in sample]
