"""Beneath a Steel Sky, CD version 0.0372 (Debian ``beneath-a-steel-sky``).

Files (ScummVM ``engines/sky``): ``sky.dnr`` is a little-endian uint32 count, then 8-byte
entries: uint16 file number, 3-byte offset (bit 23: the offset counts 16-byte units) and 3-byte
flags (bits 0-21: size; bit 23: stored raw; bit 22: no header kept before packed data) into
``sky.dsk`` (``disk.cpp``). A file starts with a 22-byte ``DataFileHeader``; when its ``flag`` word
has bit 7 set the rest is RNC ProPack method 1 (``rnc_deco.cpp``). ``sky.cpt`` holds the
"compacts" (game objects) with their names (``compact.cpp``).

Speech: the line with text number ``t`` is file ``50000 + _speechConvertTable[t >> 12] +
(t & 0xFFF)`` (``sound.cpp`` ``startSpeech``), unsigned 8-bit mono PCM at 11,025 Hz after the
header. Every speech file of this release is RNC-packed.

Who speaks (``logic.cpp``): the game's scripts (files 60400-60406, 16-bit words; word 0 is
the module's number of scripts ``n``, words 1..n their offsets, script ``k`` of module ``m``
being script number ``m << 12 | k``) call ``fnSpeakMe``/``fnSpeakMeDir``/``fnSpeakWait``/
``fnSpeakWaitDir`` (mcode 35-38, ``call_mcode 3``) after pushing the speaking compact, the text
number and an animation. A line is attributed only when the static script says who speaks:

* the compact is a constant (``push_number <id>``);
* ``fnSpeakMeDir`` on the script's own compact (``CUR_ID``): ScummVM: "must be player" (Foster);
* ``fnSpeakMe`` on ``CUR_ID`` with talk animation 7 or 9 (Foster's own entries of the talk
  table: ``smlfost_conv``/``bigfost_conv``, ``big_f_up``);
* texts stored in the chooser slots ``TEXT1 + 2k``: ``fnChooser`` shows them and the player
  says the one chosen;
* ``fnSpeakWait(var 120, ...)`` inside a character's speech script (a forward script of
  :data:`FORWARD_SCRIPTS`), when every place that enters it (``push_variable <forward>;
  fnSetAlternate|fnStartSub``, or ``fnAltSetAlternate|fnTheyStartSub`` on a constant compact)
  sets var 120 (``id_talking``) to one and the same compact before, in the same script: a
  constant (``push_number <id>; pop_var 480``), or ``click_id`` (var 20, the compact the
  player clicked) where the entry lies in a ``switch click_id`` case for that compact (the
  generic ``MEGA_ACTION``) or the script is the action script (compact field 17) of exactly
  one compact. Scripts are decoded instruction by instruction (``script()``'s operand
  counts) for this; an entry where var 120 is not known drops the whole speech script.

A text claimed by two speakers is dropped. Which compacts are admitted, as which character,
and the document that gives each sex, is in :mod:`apps.voice_gender.speakers`.

Decoding: the admitted lines are unpacked once to 16-bit WAV at 11,025 Hz (``(byte - 128) *
256``) under ``<cache>/voice_sources/<version>/steel_sky/en-<attribution>/`` as
``<character>__<text>.wav``, in a temporary folder renamed when complete; ``<attribution>``
(:func:`attribution_key`) hashes the forward table, the attribution rules' version and the
admitted compacts, so a changed attribution decodes afresh instead of reusing stale files.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..speakers import SKY_COMPACTS, STEEL_SKY_SPEAKERS, Speaker
from .base import Clip, SourceError, decoded_dir, fetch_package, unsigned8_to_int16

PACKAGE = "beneath-a-steel-sky"
DATA_DIR = Path("usr/share/scummvm/beneath-a-steel-sky")
SPEECH_RATE = 11_025
HEADER = 22  # sizeof(DataFileHeader): 11 little-endian uint16
SPEECH_BASE = 50_000
# sound.cpp _speechConvertTable: first speech file of each text section.
SPEECH_CONVERT = (0, 600, 1100, 2430, 3380, 4530, 5080, 5230)
MODULES = range(60400, 60407)  # F_MODULE_0.. (skydefs.h)
DNR_ENTRIES_0372 = 5097  # disk.cpp determineGameVersion: CD v0.0372

# Script interpreter (logic.cpp script()): opcodes and their word operands.
_PUSH_VAR, _PUSH_NUM, _POP_VAR, _CALL_MCODE, _SWITCH = 0, 2, 6, 11, 14
# Operand words of every other opcode; switch reads a case count c, then c (value, offset)
# pairs and a default offset. 13 and 19 end the script.
_OPERANDS = {0: 1, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1, 6: 1, 7: 0, 8: 0, 9: 1, 10: 0, 11: 2, 12: 0,
             13: 0, 15: 1, 16: 1, 17: 0, 18: 1, 19: 0, 20: 0}
# mcode word = 4 * index in logic.cpp setupMcodeTable.
_SPEAK = {35 * 4: "me", 36 * 4: "me_dir", 37 * 4: "wait", 38 * 4: "wait_dir"}
_SET_ALTERNATE, _START_SUB = 24 * 4, 7 * 4  # 1 argument: the script, for the current compact
_ALT_SET_ALTERNATE, _THEY_START_SUB = 25 * 4, 8 * 4  # 2 arguments: a compact, its script
_CUR_ID = 12 * 4  # logic.h scriptVariableOffsets (variable words are 4 * index)
_CLICK_ID = 20 * 4  # debug.cpp scriptVars[20] "click_id": the compact the player clicked
_SPEECH_TARGET = 120 * 4  # scriptVars[120] "id_talking": the person spoken to
_CHOOSER_SLOTS = frozenset(4 * (53 + 2 * k) for k in range(20))  # TEXT1 (53), text/anim pairs
_FOSTER_TALK_ANIMS = (7, 9)  # talk table: smlfost_conv/bigfost_conv, (none)/big_f_up
_CPT_COMPACT = 1  # compact.h CptTypeIds: COMPACT (the others are tables, lists, sequences)
_ACTION_SCRIPT = 17  # struct.h Compact field 17: actionScript, run when the player uses it

# Forward variables (logic.cpp: initScriptVariables copies forwardList1b to variable 352,
# forwardList4b to 663 and forwardList3b to 721, so variable = base + index in the list; the
# names ScummVM's debug.cpp gives those variables agree, e.g. 369 "safe_anita_speech", 370
# "safe_lamb_speech", 673 "ref_father_speech") -> script number (skydefs.h). The scripts are
# the characters' conversations (each holds fnSpeakWait(var 120, ...) lines); no script
# assigns any of these variables, so they keep these values all game.
FORWARD_SCRIPTS = {
    352: 0x10A9,  # JOBS_SPEECH
    355: 0x10AB,  # JOEY_RECYCLE
    362: 0x2109,  # GORDON_SPEECH (also entered from HELGA_ACTION without var 120: dropped)
    364: 0x210D,  # LOB_DAD_SPEECH
    365: 0x210E,  # LOB_SON_SPEECH
    366: 0x210A,  # GUARD_SPEECH (debug.cpp: safe_skorl_speech)
    367: 0x0076,  # MANTRACH_SPEECH (debug.cpp: safe_uchar_speech)
    368: 0x210C,  # WRECK_SPEECH
    369: 0x2105,  # ANITA_SPEECH
    370: 0x2106,  # LAMB_FACTORY (debug.cpp: safe_lamb_speech)
    371: 0x2108,  # FORE_SPEECH
    376: 0x210F,  # RADMAN_SPEECH
    381: 0x3139,  # BURKE_SPEECH
    385: 0x313A,  # JASON_SPEECH (debug.cpp: safe_body_speech)
    386: 0x313B,  # JOEY_BELLEVUE
    387: 0x313C,  # ANCHOR_SPEECH
    391: 0x313D,  # TREVOR_SPEECH
    392: 0x2110,  # JOEY_FACTORY
    393: 0x313E,  # HELGA_SPEECH
    395: 0x313F,  # GALL_BELLEVUE (debug.cpp: gal_bel_speech)
    400: 0x005D,  # LAMB_BELLEVUE (debug.cpp: safe_lamb_bell)
    663: 0x5001,  # WALTER_SPEECH
    664: 0x5002,  # JOEY_MEDIC
    668: 0x5003,  # KEN_SPEECH
    673: 0x5004,  # BORED_ROOM (debug.cpp: ref_father_speech)
    675: 0x0046,  # HOBS_END
    721: 0x4001,  # DANI_SPEECH
    724: 0x4002,  # HENRI_SPEECH
    725: 0x4003,  # BUZZER_SPEECH
    728: 0x4004,  # JUKEBOX_SPEECH
    729: 0x0040,  # VINCENT_SPEECH
    730: 0x0041,  # EDDIE_SPEECH
    731: 0x0042,  # BLUNT_SPEECH
    736: 0x4005,  # BARRY_SPEECH
    737: 0x0043,  # COLSTON_SPEECH
    738: 0x0044,  # GALL_SPEECH
    739: 0x4006,  # BABS_SPEECH
    740: 0x0045,  # CHUTNEY_SPEECH
}
# Bump when the attribution rules change (the decoded folder's name hashes it): 2 = forward
# scripts entered through click_id and action scripts, the script table read from word 1.
ATTRIBUTION_RULES = 2


@dataclass(frozen=True)
class DiskEntry:
    """One ``sky.dnr`` entry: where a file lies in ``sky.dsk`` and how it is stored."""

    offset: int
    size: int
    raw: bool
    no_header: bool


def read_dinner_table(data: bytes) -> dict[int, DiskEntry]:
    """Parse ``sky.dnr``: file number -> :class:`DiskEntry`.

    Args:
        data: the whole ``sky.dnr``.

    Raises:
        SourceError: the table is truncated or is not the CD release 0.0372.
    """
    if len(data) < 4:
        raise SourceError("sky.dnr: shorter than its entry count")
    (count,) = struct.unpack_from("<I", data)
    if len(data) < 4 + 8 * count:
        raise SourceError(f"sky.dnr: {count} entries announced, file holds {(len(data) - 4) // 8}")
    if count != DNR_ENTRIES_0372:
        raise SourceError(f"sky.dnr: {count} entries; expected {DNR_ENTRIES_0372} (CD v0.0372, "
                          "the release whose speech and script layout this reader was checked "
                          "against)")
    table = {}
    for i in range(count):
        base = 4 + 8 * i
        (number,) = struct.unpack_from("<H", data, base)
        offset = int.from_bytes(data[base + 2:base + 5], "little")
        flags = int.from_bytes(data[base + 5:base + 8], "little")
        start = (offset & 0x7FFFFF) << 4 if offset >> 23 & 1 else offset & 0x7FFFFF
        table[number] = DiskEntry(start, flags & 0x3FFFFF, bool(flags >> 23 & 1),
                                  bool(flags >> 22 & 1))
    return table


# ----------------------------------------------------------------------------- RNC ProPack


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC = _crc_table()


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class _BitReader:
    """rnc_deco.cpp's 32-bit window over little-endian words, mirrored with 16-bit registers.

    Literal runs are copied straight from the byte stream, after which the window is refilled
    (:meth:`after_literal`), exactly like ScummVM does: the bit stream and the literal bytes are
    interleaved in the packed data.
    """

    def __init__(self, src: bytes, pos: int):
        self.src, self.pos = src, pos
        self.low, self.high, self.count = self.word(pos), 0, 0

    def word(self, pos: int) -> int:
        return self.src[pos] | self.src[pos + 1] << 8

    def bits(self, amount: int) -> int:
        value = ((1 << amount) - 1) & self.low
        count = self.count - amount
        if count < 0:
            count = self.count
            rem = (self.high << (16 - count)) & 0xFFFF
            self.high >>= count
            self.low = ((self.low >> count) | rem) & 0xFFFF
            self.pos += 2
            self.high = self.word(self.pos)
            amount -= count
            count = 16 - amount
        rem = (self.high << (16 - amount)) & 0xFFFF
        self.high >>= amount
        self.low = ((self.low >> amount) | rem) & 0xFFFF
        self.count = count
        return value

    def after_literal(self, length: int) -> bytes:
        chunk = self.src[self.pos:self.pos + length]
        self.pos += length
        a, b = self.word(self.pos), self.word(self.pos + 2)
        self.low = ((self.low & ((1 << self.count) - 1)) | (a << self.count)) & 0xFFFF
        self.high = ((a >> (16 - self.count)) | (b << self.count)) & 0xFFFF
        return chunk


def _huffman_table(reader: _BitReader, previous: list) -> list:
    # A block may keep the previous table (0 codes), as rnc_deco.cpp leaves it untouched.
    count = reader.bits(5)
    if not count:
        return previous
    lengths = [reader.bits(4) for _ in range(count)]
    table, code = [], 0
    for length in range(1, 17):
        for symbol in range(count):
            if lengths[symbol] == length:
                top = code >> (16 - length)
                reversed_code = int(f"{top:0{length}b}"[::-1], 2)
                table.append(((1 << length) - 1, reversed_code, length, symbol))
                code += 1 << (16 - length)
    return table


def _huffman_value(reader: _BitReader, table: list) -> int:
    for mask, code, length, symbol in table:
        if reader.low & mask == code:
            break
    else:
        raise SourceError("RNC: no Huffman code matches the bit stream")
    reader.bits(length)
    if symbol >= 2:
        symbol = reader.bits(symbol - 1) | (1 << (symbol - 1))
    return symbol


def rnc_unpack(packed: bytes) -> bytes:
    """Unpack RNC ProPack method 1 data (``RNC\\x01`` header), checking both CRCs.

    Args:
        packed: from the ``RNC\\x01`` signature to the end of the packed data.

    Raises:
        SourceError: not RNC method 1, truncated, or a CRC or length mismatch.
    """
    if packed[:4] != b"RNC\x01":
        raise SourceError("RNC: no 'RNC\\x01' signature")
    unpacked_len, packed_len, crc_unpacked, crc_packed = struct.unpack_from(">IIHH", packed, 4)
    if len(packed) < 18 + packed_len:
        raise SourceError(f"RNC: {packed_len} packed bytes announced, {len(packed) - 18} present")
    if _crc16(packed[18:18 + packed_len]) != crc_packed:
        raise SourceError("RNC: packed data CRC mismatch")
    reader = _BitReader(bytes(packed[:18 + packed_len]) + bytes(8), 18)
    reader.bits(2)
    out = bytearray()
    raw = pos = lengths = []
    for _ in range(packed[17]):
        raw, pos = _huffman_table(reader, raw), _huffman_table(reader, pos)
        lengths = _huffman_table(reader, lengths)
        counts = reader.bits(16)
        while True:
            literal = _huffman_value(reader, raw)
            if literal:
                out += reader.after_literal(literal)
            if counts > 1:
                distance = _huffman_value(reader, pos) + 1
                length = _huffman_value(reader, lengths) + 2
                if distance > len(out):
                    raise SourceError("RNC: back-reference before the start of the output")
                start = len(out) - distance
                if distance >= length:
                    out += out[start:start + length]
                else:  # overlapping copy repeats the last `distance` bytes
                    for k in range(length):
                        out.append(out[start + k])
            counts -= 1
            if counts <= 0:
                break
    if len(out) != unpacked_len:
        raise SourceError(f"RNC: unpacked {len(out)} bytes, header says {unpacked_len}")
    if _crc16(out) != crc_unpacked:
        raise SourceError("RNC: unpacked data CRC mismatch")
    return bytes(out)


# ----------------------------------------------------------------------------- data disk


class DataDisk:
    """``sky.dsk`` files by number, as ScummVM's ``Disk::loadFile`` returns them."""

    def __init__(self, root: Path):
        """Open the data files of an extracted package.

        Args:
            root: the package root (``usr/share/scummvm/beneath-a-steel-sky`` below it).

        Raises:
            SourceError: a data file is missing.
        """
        folder = root / DATA_DIR
        for name in ("sky.dnr", "sky.dsk", "sky.cpt"):
            if not (folder / name).is_file():
                raise SourceError(f"{PACKAGE} has no {DATA_DIR / name}")
        self.folder = folder
        self.table = read_dinner_table((folder / "sky.dnr").read_bytes())
        self.disk = (folder / "sky.dsk").read_bytes()

    def load(self, number: int) -> bytes:
        """File ``number`` with its 22-byte header, unpacked if it was RNC-packed.

        Args:
            number: the file number.

        Raises:
            SourceError: no such file, or it lies outside ``sky.dsk`` or does not unpack.
        """
        entry = self.table.get(number)
        if entry is None:
            raise SourceError(f"sky.dsk: no file {number}")
        data = self.disk[entry.offset:entry.offset + entry.size]
        if len(data) != entry.size or len(data) < HEADER:
            raise SourceError(f"sky.dsk: file {number} runs past the end of sky.dsk")
        (flag,) = struct.unpack_from("<H", data)
        if entry.raw or not flag >> 7 & 1 or data[HEADER:HEADER + 4] != b"RNC\x01":
            return data
        try:
            body = rnc_unpack(data[HEADER:])
        except SourceError as exc:
            raise SourceError(f"sky.dsk file {number}: {exc}") from exc
        return body if entry.no_header else data[:HEADER] + body


def speech_file(text: int) -> int:
    """The ``sky.dsk`` file number of the speech of text number ``text`` (``sound.cpp``).

    Args:
        text: the game's text number (section in bits 12-15).
    """
    return SPEECH_BASE + SPEECH_CONVERT[text >> 12 & 7] + (text & 0xFFF)


def speech_pcm(disk: DataDisk, text: int) -> np.ndarray | None:
    """The speech of one text as int16 PCM at 11,025 Hz, or None when the line has no speech.

    Args:
        disk: the opened data disk.
        text: the game's text number.

    Raises:
        SourceError: the speech file is corrupt or shorter than its header says.
    """
    number = speech_file(text)
    if number not in disk.table:
        return None
    data = disk.load(number)
    flag, total = struct.unpack_from("<H", data)[0], struct.unpack_from("<H", data, 12)[0]
    # disk.cpp: an unpacked size above 64 KiB keeps its high bits in the flag's high byte.
    total |= (flag & 0xFF00) << 8
    if total < HEADER or total > len(data):
        raise SourceError(f"sky.dsk speech file {number} (text {text}): header size {total}, "
                          f"{len(data)} bytes")
    body = np.frombuffer(data[HEADER:total], dtype=np.uint8)
    return unsigned8_to_int16(body)


# ----------------------------------------------------------------------------- who speaks


def _parse_cpt(data: bytes) -> tuple[dict[int, str], dict[int, tuple[int, ...]], dict[int, int]]:
    # compact.cpp's layout: names, 16-bit fields and type of every entry, then the links.
    try:
        version, lists = struct.unpack_from("<HH", data)
        if version != 0:
            raise SourceError(f"sky.cpt: unknown version {version}")
        pos = 4
        lengths = struct.unpack_from(f"<{lists}H", data, pos)
        pos += 2 * lists + 4  # the raw size is not needed
        (src_words,) = struct.unpack_from("<I", data, pos)
        src = data[pos + 4:pos + 4 + 2 * src_words]
        pos += 4 + 2 * src_words
        (ascii_size,) = struct.unpack_from("<I", data, pos)
        names_blob = data[pos + 4:pos + 4 + ascii_size]
        pos += 4 + ascii_size
        names, fields, types, spos, apos = {}, {}, {}, 0, 0
        for lst, length in enumerate(lengths):
            for element in range(length):
                (size,) = struct.unpack_from("<H", src, spos)
                spos += 2
                if not size:
                    continue
                cid = lst << 12 | element
                (types[cid],) = struct.unpack_from("<H", src, spos)
                spos += 2
                end = names_blob.index(b"\0", apos)
                names[cid] = names_blob[apos:end].decode("latin-1")
                apos = end + 1
                fields[cid] = struct.unpack_from(f"<{size}H", src, spos)
                spos += 2 * size
        # Links: ids that only point at another compact, and carry their own name.
        (links,) = struct.unpack_from("<H", data, pos)
        for i in range(links):
            cid, dest = struct.unpack_from("<HH", data, pos + 2 + 4 * i)
            end = names_blob.index(b"\0", apos)
            names[cid] = names_blob[apos:end].decode("latin-1")
            apos = end + 1
            if dest in fields:
                fields[cid] = fields[dest]
    except (struct.error, ValueError) as exc:
        raise SourceError(f"sky.cpt: truncated or corrupt ({exc})") from exc
    return names, fields, types


def read_compacts(data: bytes) -> tuple[dict[int, str], dict[int, tuple[int, ...]]]:
    """``sky.cpt`` (compact.cpp): compact id -> name, and id -> its 16-bit fields.

    Args:
        data: the whole ``sky.cpt``.

    Raises:
        SourceError: an unknown version or a truncated file.
    """
    names, fields, _ = _parse_cpt(data)
    return names, fields


def action_scripts(data: bytes) -> dict[int, int]:
    """``sky.cpt``: compact id -> its action script (field 17), for real compacts only.

    Links are left out: they repeat another compact's fields under a second id, and a script
    is trusted as one compact's action only when no other compact has it.

    Args:
        data: the whole ``sky.cpt``.

    Raises:
        SourceError: an unknown version or a truncated file.
    """
    _, fields, types = _parse_cpt(data)
    return _actions_of(fields, types)


def _actions_of(fields: dict[int, tuple[int, ...]], types: dict[int, int]) -> dict[int, int]:
    return {cid: f[_ACTION_SCRIPT] for cid, f in fields.items()
            if types.get(cid) == _CPT_COMPACT and len(f) > _ACTION_SCRIPT and f[_ACTION_SCRIPT]}


def _words(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(data) // 2}H", data[:len(data) // 2 * 2])


def _script_spans(words: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    """Script index -> (first word, end) in a module (scripts lie back to back)."""
    count = words[0] if words else 0
    table = words[1:count + 1]
    starts = sorted({w for w in table if count < w < len(words)})
    ends = dict(zip(starts, starts[1:] + [len(words)]))
    return {k: (w, ends[w]) for k, w in enumerate(table, 1) if w in ends}


def _instructions(words: tuple[int, ...], start: int, end: int) -> list[tuple[int, int, tuple]]:
    """``(position, opcode, operands)`` of a script, decoded in order up to an unknown opcode."""
    out, i = [], start
    while i < end:
        op = words[i]
        if op == _SWITCH and i + 1 < end:
            size = 2 + 2 * words[i + 1]
        elif op in _OPERANDS:
            size = _OPERANDS[op]
        else:
            break
        if i + 1 + size > end:  # runs past the script: not code after all
            break
        out.append((i, op, words[i + 1:i + 1 + size]))
        i += 1 + size
    return out


def _speech_calls(words: tuple[int, ...]):
    """(position, kind, (op, value) x 3) of every 3-argument speak call in a module."""
    for i in range(6, len(words) - 2):
        if words[i] == _CALL_MCODE and words[i + 1] == 3 and words[i + 2] in _SPEAK:
            yield i, _SPEAK[words[i + 2]], ((words[i - 6], words[i - 5]),
                                            (words[i - 4], words[i - 3]),
                                            (words[i - 2], words[i - 1]))


def _case_value(code: list[tuple[int, int, tuple]], k: int, var: int) -> int | None:
    """The value ``var`` has at instruction ``k``, from the case of the nearest switch before
    it (None unless that switch is on ``var``, and ``k`` lies in one case that one value
    selects, not in the default)."""
    site = code[k][0]
    for j in range(k - 1, 0, -1):
        pos, op, args = code[j]
        if op != _SWITCH:
            continue
        if code[j - 1][1] != _PUSH_VAR or code[j - 1][2][0] != var:
            return None
        cases = args[0]
        # logic.cpp: a case jumps to (its offset word) + offset / 2, the default to (the
        # default word) + offset / 2; a case's code runs up to the next such target.
        targets: dict[int, set[int]] = defaultdict(set)
        for n in range(cases):
            targets[pos + 3 + 2 * n + args[2 + 2 * n] // 2].add(args[1 + 2 * n])
        bounds = sorted({*targets, pos + 2 + 2 * cases + args[1 + 2 * cases] // 2})
        for target, values in targets.items():
            after = [b for b in bounds if b > target]
            if target <= site and (not after or site < after[0]) and len(values) == 1:
                return next(iter(values))
        return None
    return None


def _entered_scripts(modules: dict[int, tuple[int, ...]], actions: dict[int, int]
                     ) -> dict[int, set[int | None]]:
    """Forward script number -> what var 120 holds at each place that enters it (None where
    the script entering it does not settle it)."""
    by_action: dict[int, set[int]] = defaultdict(set)
    for cid, script in actions.items():
        by_action[script].add(cid)
    found: dict[int, set[int | None]] = defaultdict(set)
    for module, words in modules.items():
        for index, (start, end) in _script_spans(words).items():
            code = _instructions(words, start, end)
            sets_click = any(op == _POP_VAR and a[0] == _CLICK_ID for _, op, a in code)
            for k in range(1, len(code)):
                _, op, args = code[k]
                prev = code[k - 1]
                if op != _CALL_MCODE or prev[1] != _PUSH_VAR:
                    continue
                own = args == (1, _SET_ALTERNATE) or args == (1, _START_SUB)
                other = (args in ((2, _ALT_SET_ALTERNATE), (2, _THEY_START_SUB))
                         and k >= 2 and code[k - 2][1] == _PUSH_NUM)
                script = FORWARD_SCRIPTS.get(prev[2][0] // 4)
                if script is None or not (own or other):
                    continue
                # Every assignment to var 120 before the entry, in this script.
                sources = {(code[j - 1][1], code[j - 1][2][0]) for j in range(1, k)
                           if code[j][1] == _POP_VAR and code[j][2][0] == _SPEECH_TARGET
                           and code[j - 1][1] in (_PUSH_NUM, _PUSH_VAR)}
                sets_other = any(code[j][1] == _POP_VAR and code[j][2][0] == _SPEECH_TARGET
                                 and code[j - 1][1] not in (_PUSH_NUM, _PUSH_VAR)
                                 for j in range(1, k))
                who = None
                if len(sources) == 1 and not sets_other:
                    src_op, value = next(iter(sources))
                    if src_op == _PUSH_NUM:
                        who = value
                    elif value == _CLICK_ID and not sets_click:
                        who = _case_value(code, k, _CLICK_ID)
                        clicked = by_action.get(module << 12 | index, set())
                        if who is None and len(clicked) == 1:
                            who = next(iter(clicked))
                found[script].add(who)
    return found


def attribute_lines(modules: dict[int, tuple[int, ...]], names: dict[int, str],
                    actions: dict[int, int] | None = None) -> dict[int, str]:
    """Text number -> name of the compact that speaks it, from the game's scripts.

    Args:
        modules: module number (0-6) -> its 16-bit words (files 60400-60406).
        names: compact id -> name, from :func:`read_compacts`.
        actions: compact id -> action script, from :func:`action_scripts` (lets an action
            script that enters a speech script with var 120 = click_id name its compact).
    """
    claims: dict[int, set[str]] = defaultdict(set)
    for words in modules.values():
        for i in range(2, len(words) - 1):
            if (words[i] == _POP_VAR and words[i + 1] in _CHOOSER_SLOTS
                    and words[i - 2] == _PUSH_NUM):
                claims[words[i - 1]].add("foster")
        for _, kind, ((t_op, target), (m_op, text), (a_op, anim)) in _speech_calls(words):
            if m_op != _PUSH_NUM:
                continue
            if t_op == _PUSH_NUM and target in names:
                claims[text].add(names[target])
            elif t_op == _PUSH_VAR and target == _CUR_ID and (
                    kind == "me_dir" or (kind == "me" and a_op == _PUSH_NUM
                                         and anim in _FOSTER_TALK_ANIMS)):
                claims[text].add("foster")
    for script, targets in _entered_scripts(modules, actions or {}).items():
        who = names.get(next(iter(targets))) if len(targets) == 1 else None
        span = _script_spans(modules.get(script >> 12, ())).get(script & 0xFFF)
        if who is None or span is None:
            continue
        words = modules[script >> 12]
        for i, _, ((t_op, target), (m_op, text), _) in _speech_calls(words):
            if span[0] <= i < span[1] and t_op == _PUSH_VAR and target == _SPEECH_TARGET \
                    and m_op == _PUSH_NUM:
                claims[text].add(who)
    return {text: next(iter(who)) for text, who in claims.items() if len(who) == 1}


def admitted_lines(disk: DataDisk) -> dict[int, str]:
    """Text number -> admitted character (:data:`SKY_COMPACTS`) for lines with speech.

    Args:
        disk: the opened data disk.
    """
    # One parse of sky.cpt gives both the names and the action scripts.
    names, fields, types = _parse_cpt((disk.folder / "sky.cpt").read_bytes())
    modules = {number - MODULES[0]: _words(disk.load(number)) for number in MODULES}
    lines = {}
    for text, compact in attribute_lines(modules, names, _actions_of(fields, types)).items():
        character = SKY_COMPACTS.get(compact)
        if character and speech_file(text) in disk.table:
            lines[text] = character
    return lines


def attribution_key() -> str:
    """Short hash of what decides which lines are decoded and as whom: the forward table,
    :data:`ATTRIBUTION_RULES` and the admitted compacts. It names the decoded folder."""
    spec = repr((ATTRIBUTION_RULES, sorted(FORWARD_SCRIPTS.items()), sorted(SKY_COMPACTS.items())))
    return hashlib.sha256(spec.encode()).hexdigest()[:8]


def decode(package_root: Path | None = None, limit: int | None = None) -> Path:
    """Decode every admitted speech line to WAV in the cache (once); return the folder.

    Args:
        package_root: the extracted package (fetched when None).
        limit: decode only the first ``limit`` lines (tests), into their own cache folder
            ``en-<attribution>-first<limit>``.

    Raises:
        SourceError: the data files are missing or corrupt, or no line is admitted.
    """
    import soundfile as sf

    from rnnkit.atomic import atomic_directory

    # The attribution key in the name: a changed table never reuses a stale decoded folder.
    part = f"en-{attribution_key()}"
    out = decoded_dir("steel_sky", part if limit is None else f"{part}-first{limit}")
    if (out / ".complete").exists():
        return out
    disk = DataDisk(package_root or fetch_package(PACKAGE))
    lines = sorted(admitted_lines(disk).items())[:limit]
    if not lines:
        raise SourceError(f"{disk.folder}: no admitted speech line found")
    count = 0
    with atomic_directory(out, overwrite=True) as tmp:
        for text, character in lines:
            pcm = speech_pcm(disk, text)
            if pcm is None or not len(pcm):
                continue
            sf.write(tmp / f"{character}__{text:05d}.wav", pcm, SPEECH_RATE, subtype="PCM_16")
            count += 1
        (tmp / ".complete").write_text(f"{count}\n")
    return out


def sky_speaker(character: str) -> Speaker:
    """The documented steel_sky speaker of a character (kept outside ``SPEAKERS`` until the
    reader is registered).

    Args:
        character: e.g. ``"danielle"``.

    Raises:
        KeyError: naming the id, when no document admits that character.
    """
    by_id = {s.id: s for s in STEEL_SKY_SPEAKERS}
    sid = f"steel_sky-{character}"
    if sid not in by_id:
        raise KeyError(f"no documented speaker {sid!r} in apps/voice_gender/speakers.py")
    return by_id[sid]


def clips(limit: int | None = None) -> list[Clip]:
    """Every admitted Beneath a Steel Sky speech line (decoded into the cache first).

    Args:
        limit: only the first ``limit`` admitted lines (by text number), for quick tests.
    """
    out = []
    for wav in sorted(decode(limit=limit).glob("*.wav")):
        spk = sky_speaker(wav.stem.split("__", 1)[0])
        out.append(Clip(wav, spk.sex, spk.id, "steel_sky", spk.language, spk.group))
    return out
