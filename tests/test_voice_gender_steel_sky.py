"""Beneath a Steel Sky reader on the real package files (the real fetch path, cached)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from apps.voice_gender import sources
from apps.voice_gender.sources import base, steel_sky
from apps.voice_gender.speakers import SKY_COMPACTS, STEEL_SKY_SPEAKERS


@pytest.fixture(scope="module")
def disk():
    return steel_sky.DataDisk(base.fetch_package(steel_sky.PACKAGE))


@pytest.fixture(scope="module")
def lines(disk):
    return steel_sky.admitted_lines(disk)


def test_dinner_table_and_rnc(disk):
    assert len(disk.table) == steel_sky.DNR_ENTRIES_0372
    dnr = (disk.folder / "sky.dnr").read_bytes()
    with pytest.raises(base.SourceError, match="entries announced"):
        steel_sky.read_dinner_table(dnr[:1000])
    packed = disk.disk[disk.table[50007].offset + steel_sky.HEADER:][:disk.table[50007].size]
    assert len(steel_sky.rnc_unpack(packed)) == 12607
    corrupt = packed[:40] + bytes([packed[40] ^ 0xFF]) + packed[41:]
    with pytest.raises(base.SourceError, match="CRC"):
        steel_sky.rnc_unpack(corrupt)
    with pytest.raises(base.SourceError, match="signature"):
        steel_sky.rnc_unpack(b"RIFF" + packed[4:])


def test_speech_file_numbers():
    assert steel_sky.speech_file(0x0007) == 50007
    assert steel_sky.speech_file(0x4003) == 50000 + 3380 + 3       # section 4
    assert steel_sky.speech_file(0x5000 | 1) == 50000 + 4530 + 1


def test_speech_decodes_to_plausible_audio(disk):
    # Text 16387 'I'm Mrs Piermont...'.
    pcm = steel_sky.speech_pcm(disk, 16387)
    assert pcm.dtype == np.int16
    assert 0.5 < len(pcm) / steel_sky.SPEECH_RATE < 10.0
    assert np.abs(pcm.astype(np.int32)).max() > 8000   # speech, not the 0x80 silence byte
    assert steel_sky.speech_pcm(disk, 0x7FFF) is None  # no speech file for that text


def test_undocumented_characters_have_no_speaker():
    with pytest.raises(KeyError, match="no documented speaker 'steel_sky-joey'"):
        steel_sky.sky_speaker("joey")


def test_lines_are_attributed_once_to_documented_characters(lines):
    by_character = Counter(lines.values())
    assert set(by_character) <= set(SKY_COMPACTS.values())
    assert by_character["foster"] > 500 and by_character["danielle"] > 50
    # The game's own lines where the speakers name themselves.
    assert lines[16387] == "danielle"     # I'm Mrs Piermont...
    assert lines[17157] == "babs"         # They call ME Babs.
    assert lines[8690] == "anita"         # My name is ANITA!
    assert lines[20701] == "walter"       # I am known as WALTER...
    # Machines and undocumented speakers are not admitted (Joey, Ken, the clerk, Vincent).
    assert not {"joey", "ken", "sc42_clerk", "sc32_vincent"} & set(SKY_COMPACTS)
    for character in by_character:
        spk = steel_sky.sky_speaker(character)
        assert spk.sex in ("female", "male") and len(spk.document) > 40
        assert spk.group == "steel_sky"


def test_a_text_claimed_by_two_speakers_is_dropped():
    # Module: offset table (1 script at word 1), then foster says 500 as the player and
    # compact 7 says 500 and 501 (push_number target, text, anim; call_mcode 3 fnSpeakMe).
    words = (1,
             0, 48, 2, 500, 2, 9, 11, 3, 144,
             2, 7, 2, 500, 2, 0, 11, 3, 140,
             2, 7, 2, 501, 2, 0, 11, 3, 148, 19)
    got = steel_sky.attribute_lines({0: words}, {7: "danielle", 3: "foster"})
    assert got == {501: "danielle"}


def test_clips_decode_and_no_clip_is_attributed_twice():
    clips = steel_sky.clips(limit=40)
    assert len(clips) >= 30
    stems = [c.path.stem.split("__", 1)[1] for c in clips]
    assert len(stems) == len(set(stems))
    by_id = {s.id: s for s in STEEL_SKY_SPEAKERS}
    for c in clips:
        assert c.label == by_id[c.speaker].sex
        assert c.group == "steel_sky" and c.language == "en"
        info = sf.info(str(c.path))
        assert info.samplerate == steel_sky.SPEECH_RATE and info.channels == 1
        assert 0.2 < info.frames / info.samplerate < 30.0
    audio = sources.load(clips[0])
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 1600
