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


# Admitted lines with speech per character on the real package (CD 0.0372): the forward
# scripts reached through click_id and action scripts brought Lamb, Burke, Trevor, Jason,
# Mantrach, Foster's father and the Belle Vue Gallagher, and most of Anita's, the foreman's,
# Anchor's and the lobby guards' lines (1,643 lines of 19 speakers before).
LINES_PER_CHARACTER = {
    "foster": 1059, "hobbins": 132, "lamb": 114, "danielle": 104, "anchor": 90, "anita": 90,
    "foreman": 78, "burke": 75, "judge": 51, "trevor": 49, "gallagher": 47, "henri": 43,
    "colston": 42, "blunt": 39, "eddie": 39, "lobby_dad": 36, "father": 30, "jason": 28,
    "lobby_son": 26, "mantrach": 25, "barry": 24, "walter": 24, "greaves": 19, "babs": 13,
    "radman": 6,
}


def test_lines_are_attributed_once_to_documented_characters(lines):
    by_character = Counter(lines.values())
    assert set(by_character) <= set(SKY_COMPACTS.values())
    assert dict(by_character) == LINES_PER_CHARACTER
    female = sum(n for c, n in by_character.items() if steel_sky.sky_speaker(c).sex == "female")
    assert female == 104 + 90 + 13  # Danielle, Anita, Babs
    # The game's own lines where the speakers name themselves.
    assert lines[16387] == "danielle"     # I'm Mrs Piermont...
    assert lines[17157] == "babs"         # They call ME Babs.
    assert lines[8690] == "anita"         # My name is ANITA!
    assert lines[20701] == "walter"       # I am known as WALTER...
    assert lines[13110] == "gallagher"    # I'm Gallagher. (Belle Vue, GALL_BELLEVUE)
    assert lines[12520] == "trevor"       # Welcome to Trevor's Travel Company!
    assert lines[12564] == "mantrach"     # I'm mister COOL...
    # Lines of the speech scripts entered through MEGA_ACTION's switch on click_id ...
    assert lines[234] == "lamb"           # Aye, lad - a TOUR of my FACTORY! (LAMB_FACTORY)
    assert lines[8298] == "foreman"       # The D-LINC woman? She's outside the REACTOR.
    assert lines[12320] == "burke"        # That's my WIFE you're talking about!
    # ... through the action script of exactly one compact (ANITA_ACTION) ...
    assert lines[8280] == "anita"         # Listen, I'm a MILITANT VEGETARIAN!
    # ... and after a constant (BORED_ROOM, var 120 = sc81_father).
    assert lines[20907] == "father"       # Is that ROBERT? Oh, my SON!
    assert lines[20960] == "foster"       # Which IS the monster, Father?
    # Machines and undocumented speakers are not admitted (Joey, Ken, the clerk, Vincent,
    # the security officers, the hologram receptionist).
    assert not {"joey", "ken", "sc42_clerk", "sc32_vincent", "skorl_guard", "wreck_guard",
                "holo"} & set(SKY_COMPACTS)
    for character in by_character:
        spk = steel_sky.sky_speaker(character)
        assert spk.sex in ("female", "male") and len(spk.document) > 40
        assert spk.group == "steel_sky"


def test_forward_table_matches_the_games_scripts(disk):
    # Every forward script is a script of its module, and the speech scripts whose entries
    # settle var 120 name the characters the ScummVM names say (GORDON_SPEECH does not: it is
    # also entered from HELGA_ACTION without var 120).
    names, _ = steel_sky.read_compacts((disk.folder / "sky.cpt").read_bytes())
    actions = steel_sky.action_scripts((disk.folder / "sky.cpt").read_bytes())
    modules = {n - steel_sky.MODULES[0]: steel_sky._words(disk.load(n))
               for n in steel_sky.MODULES}
    for script in steel_sky.FORWARD_SCRIPTS.values():
        assert (script & 0xFFF) in steel_sky._script_spans(modules[script >> 12])
    entered = steel_sky._entered_scripts(modules, actions)
    who = {script: {names.get(c) for c in targets} for script, targets in entered.items()}
    assert who[0x2105] == {"anita"} and who[0x2106] == who[0x005D] == {"lamb"}
    assert who[0x2108] == {"foreman"} and who[0x3139] == {"burke"}
    assert who[0x313D] == {"trevor"} and who[0x5004] == {"sc81_father"}
    assert who[0x2109] == {"monitor", None}
    assert actions[137] == 0x2081  # anita's action script: ANITA_ACTION


def _module(*scripts):
    """A script module: word 0 the script count, words 1..n their offsets, then the code."""
    words, at = [len(scripts)], 1 + len(scripts)
    for code in scripts:
        words.append(at)
        at += len(code)
    for code in scripts:
        words.extend(code)
    return tuple(words)


def test_speech_script_speaker_from_click_id_and_action_scripts(monkeypatch):
    def speech(text):  # fnSpeakWait(var 120, text, 0)
        return [0, 480, 2, text, 2, 0, 11, 3, 148, 19]

    def enter(var):  # fnSetAlternate(var <forward>)
        return [0, 4 * var, 11, 1, 96, 19]

    mega = [0, 80, 6, 480,            # var 120 = click_id
            0, 80, 14, 2, 7, 8, 9, 16, 26,  # switch click_id: 7 -> +13, 9 -> +19, else +25
            *enter(900), *enter(901), 19]
    module = _module(
        mega, speech(600), speech(601),
        [0, 80, 6, 480, *enter(902)], speech(602),   # script 4: compact 11's action script
        [0, 80, 6, 480, *enter(903)], speech(603),   # script 6: nobody's action script
        [2, 5, 6, 480, *enter(903)])                 # script 8: var 120 = 5, same script
    monkeypatch.setattr(steel_sky, "FORWARD_SCRIPTS", {900: 2, 901: 3, 902: 5, 903: 7})
    names = {7: "anita", 9: "lamb", 11: "trevor", 5: "burke"}
    got = steel_sky.attribute_lines({0: module}, names, {11: 4, 12: 6, 13: 6})
    # 603: one entry leaves var 120 unknown, so its whole speech script is dropped.
    assert got == {600: "anita", 601: "lamb", 602: "trevor"}
    assert steel_sky._script_spans(module)[8][1] == len(module)  # the last script is read


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
    # The decoded folder carries the attribution key: a changed table never reuses it.
    assert clips[0].path.parent.name == f"en-{steel_sky.attribution_key()}-first40"
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


def test_a_changed_attribution_changes_the_cache_and_dataset_names(monkeypatch):
    from apps.voice_gender import data

    key, name = steel_sky.attribution_key(), data.builder("real").builder_config.name
    monkeypatch.setitem(steel_sky.FORWARD_SCRIPTS, 999, 0x0001)
    assert steel_sky.attribution_key() != key
    assert data.builder("real").builder_config.name != name
    monkeypatch.delitem(steel_sky.FORWARD_SCRIPTS, 999)
    monkeypatch.setitem(steel_sky.SKY_COMPACTS, "skorl_guard", "blunt")
    assert steel_sky.attribution_key() != key
