"""Translation data: sentence pairs from real sources, cleaned, split, and a TFDS builder.

Sources (``--data``):

``help`` / ``help:SRC`` / ``help:SRC:TGT`` (default ``help`` = ``help:es:en-US``)
    The LibreOffice help (Debian ``libreoffice-help-<lang>``). The two HTML trees share
    relative paths; paragraphs pair by (relative path, element id, occurrence) for ids
    starting ``par_id`` or ``hd_id``. Any of the ~35 help languages works by name.
``bible``
    Reina-Valera 1909 (``sword-text-sparv``) / King James (``sword-text-kjv``), paired by
    verse position (both use KJV versification).
``anki:PATH``
    A Tatoeba/Anki export: ``English<TAB>Spanish[<TAB>attribution]`` per line; Spanish is
    the source.

Cleaning (all sources): NFC, whitespace collapsed, the menu arrow ``▸`` kept as its own
token; empty or identical-on-both-sides pairs dropped; exact duplicate pairs dropped;
length filter :data:`LENGTH_BOUNDS` (target 2-15 words, source 1-30 words, word ratio at
most 3). Split: by a hash of the lower-cased normalised source, so one source sentence
(and all its translations) lands in exactly one split: no test source is seen in training.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import struct
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow_datasets as tfds

from rnnkit.atomic import atomic_write_json
from rnnkit.errors import DataError
from rnnkit.fetch import apt_package
from rnnkit.libreoffice_help import help_paragraphs, help_text_root
from rnnkit.paths import cache_dir, tfds_dir

__all__ = [
    "EXTRA_BOUNDS",
    "LENGTH_BOUNDS",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "DataError",
    "DataSpec",
    "TranslationPairs",
    "anki_pairs",
    "bible_pairs",
    "clean_pairs",
    "help_pairs",
    "load_splits",
    "normalise",
    "parse_spec",
    "prepare",
    "raw_pairs",
    "split_pairs",
    "within",
]

#: (min, max) words of the target, of the source, and the largest word-count ratio.
LENGTH_BOUNDS = {"target_words": (2, 15), "source_words": (1, 30), "max_ratio": 3.0}
#: Bible verses are longer (median ~25 words): their own bounds.
BIBLE_LENGTH_BOUNDS = {"target_words": (2, 40), "source_words": (1, 50), "max_ratio": 3.0}
#: Pairs outside :data:`LENGTH_BOUNDS` that still teach something, used for training only
#: (split ``extra``): one-word targets from at most four source words (menu items, dialog
#: labels, headings) and targets of 16-20 words. The test and validation splits keep the
#: original bounds, so their figures compare with every earlier run; the held-out
#: one-word pairs form the report-only split ``test_short``.
EXTRA_BOUNDS = ({"target_words": (1, 1), "source_words": (1, 4), "max_ratio": 3.0},
                {"target_words": (16, 20), "source_words": (1, 30), "max_ratio": 3.0})
#: Fractions of distinct source sentences sent to each held-out split (rest: train).
SPLIT_FRACTIONS = {"test": 0.08, "validation": 0.05}
#: The builder's splits (see :func:`build_splits`).
SPLITS = ("train", "validation", "test", "extra", "test_short")

HELP_VERSION = None  # the Debian candidate (4:7.4.7-1+deb12u14 on bookworm)


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value.

    Attributes:
        kind: ``help``, ``bible`` or ``anki``.
        source_lang, target_lang: help language codes (``es``, ``en-US``).
        path: the user's file for ``anki``.
    """

    kind: str
    source_lang: str = "es"
    target_lang: str = "en-US"
    path: str | None = None

    @property
    def name(self) -> str:
        """A filesystem/TFDS-safe name for this source (used as the builder config)."""
        if self.kind == "help":
            return f"help_{self.source_lang}_{self.target_lang}".replace("-", "_").lower()
        if self.kind == "anki":
            digest = hashlib.sha256(str(Path(self.path).resolve()).encode()).hexdigest()[:10]
            return f"anki_{digest}"
        return self.kind


def parse_spec(spec: str | None) -> DataSpec:
    """Parse ``--data`` (``help[:SRC[:TGT]]``, ``bible``, ``anki:PATH``); None means ``help``.

    Args:
        spec: the value given on the command line.

    Raises:
        DataError: unknown format, or an anki path that does not exist.
    """
    spec = (spec or "help").strip()
    kind, _, rest = spec.partition(":")
    if kind == "help":
        parts = [p for p in rest.split(":") if p] if rest else []
        if len(parts) > 2 or any(not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z]{2,4})?", p) for p in parts):
            raise DataError(f"bad help spec {spec!r}: use help, help:SRC or help:SRC:TGT (e.g. help:fr:en-US)")
        src = parts[0] if parts else "es"
        tgt = parts[1] if len(parts) > 1 else "en-US"
        if src == tgt:
            raise DataError(f"source and target language are both {src!r}")
        return DataSpec("help", src, tgt)
    if kind == "bible":
        if rest:
            raise DataError("the bible source takes no argument (Reina-Valera 1909 -> King James)")
        return DataSpec("bible", "es", "en")
    if kind == "anki":
        if not rest:
            raise DataError("anki needs a path: --data anki:PATH/spa.txt")
        if not Path(rest).is_file():
            raise DataError(f"anki file not found: {rest}")
        return DataSpec("anki", "es", "en", path=rest)
    raise DataError(f"unknown data spec {spec!r}: use help[:SRC[:TGT]], bible or anki:PATH")


# --------------------------------------------------------------------------- normalisation

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFC, every kind of whitespace collapsed to one space, ``▸`` spaced as a token.

    Args:
        text: raw text (HTML entities already decoded).
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\u00ad", "").replace("\u200b", "")  # soft hyphen, zero-width space
    text = text.replace("▸", " ▸ ")
    return _SPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------- LibreOffice help

def _help_root(lang: str) -> Path:
    try:
        return help_text_root(lang, HELP_VERSION)
    except FileNotFoundError as err:
        raise DataError(str(err)) from err


def help_pairs(source_lang: str = "es", target_lang: str = "en-US",
               progress: bool = True) -> list[dict[str, str]]:
    """All aligned paragraphs of the LibreOffice help for a language pair (raw, uncleaned).

    Cached as JSON under ``<cache>/raw/translation/`` after the first parse.

    Args:
        source_lang, target_lang: help language codes (``es``, ``en-US``, ``de``, ...).
        progress: show a progress bar while parsing.

    Returns:
        A list of ``{"source", "target", "key"}`` with key ``relpath#id#occurrence``.
    """
    cache = cache_dir() / "raw" / "translation" / f"help_{source_lang}_{target_lang}.json"
    if cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    src_root, tgt_root = _help_root(source_lang), _help_root(target_lang)
    files = sorted(p.relative_to(src_root) for p in src_root.rglob("*.html"))
    pairs: list[dict[str, str]] = []
    iterator: Iterable[Path] = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc=f"aligning help {source_lang}->{target_lang}", unit="page")
    for rel in iterator:
        tgt_file = tgt_root / rel
        if not tgt_file.exists():
            continue
        src, tgt = help_paragraphs(src_root / rel), help_paragraphs(tgt_file)
        for key in sorted(src.keys() & tgt.keys()):
            pairs.append({"source": src[key], "target": tgt[key],
                          "key": f"{rel.as_posix()}#{key[0]}#{key[1]}"})
    atomic_write_json(cache, pairs)
    return pairs


# --------------------------------------------------------------------------- Bible (SWORD)

_TAG = re.compile(r"<[^>]*>")


def _sword_verses(module_dir: Path) -> list[str]:
    """All verses of a SWORD zText module in index order (OT then NT), markup stripped."""
    verses: list[str] = []
    for testament in ("ot", "nt"):
        bzs = (module_dir / f"{testament}.bzs").read_bytes()
        bzv = (module_dir / f"{testament}.bzv").read_bytes()
        bzz = (module_dir / f"{testament}.bzz").read_bytes()
        blocks: dict[int, bytes] = {}

        def block(i: int, bzs=bzs, bzz=bzz, blocks=blocks) -> bytes:
            if i not in blocks:
                off, size, _ = struct.unpack_from("<III", bzs, 12 * i)
                blocks[i] = zlib.decompress(bzz[off: off + size])
            return blocks[i]

        for j in range(len(bzv) // 10):
            b, off, size = struct.unpack_from("<IIH", bzv, 10 * j)
            raw = block(b)[off: off + size] if size else b""
            text = raw.decode("utf-8", errors="replace")
            # Tags wrap words (Strong's numbers etc.); removing them must not glue words,
            # so they become spaces, and the spaces that leaves before punctuation go.
            text = html.unescape(_TAG.sub(" ", text))
            verses.append(re.sub(r"\s+([.,;:!?])", r"\1", text))
    return verses


def bible_pairs() -> list[dict[str, str]]:
    """Reina-Valera 1909 / King James verse pairs (raw), paired by verse index."""
    out = []
    mods = {}
    for pkg, mod in (("sword-text-sparv", "sparv"), ("sword-text-kjv", "kjv")):
        root = apt_package(pkg)
        # The module folder name varies (sparv ships "spaRV1909eb"): take the one there is.
        cands = sorted(p.parent for p in root.rglob("modules/texts/ztext/*/ot.bzs"))
        if len(cands) != 1:
            raise DataError(f"{pkg}: expected one modules/texts/ztext/<module>, found {len(cands)}")
        mods[mod] = _sword_verses(cands[0])
    es, en = mods["sparv"], mods["kjv"]
    if len(es) != len(en):
        raise DataError(f"verse counts differ: sparv {len(es)} vs kjv {len(en)}")
    for i, (s, t) in enumerate(zip(es, en)):
        out.append({"source": s, "target": t, "key": f"verse#{i}"})
    return out


# --------------------------------------------------------------------------- Anki / Tatoeba


def anki_pairs(path: str | Path) -> list[dict[str, str]]:
    """Pairs from a Tatoeba/Anki file: ``English<TAB>Spanish[<TAB>attribution]`` per line.

    Args:
        path: the ``spa.txt``-style file.

    Raises:
        DataError: naming the first malformed line.
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise DataError(f"{path}:{n}: expected English<TAB>Spanish[<TAB>attribution], "
                                f"got {line[:80]!r}")
            out.append({"source": cols[1], "target": cols[0], "key": f"line#{n}"})
    if not out:
        raise DataError(f"{path}: no sentence pairs found")
    return out


def raw_pairs(spec: DataSpec) -> list[dict[str, str]]:
    """The raw (uncleaned) pairs of a data source."""
    if spec.kind == "help":
        return help_pairs(spec.source_lang, spec.target_lang)
    if spec.kind == "bible":
        return bible_pairs()
    return anki_pairs(spec.path)


# --------------------------------------------------------------------------- cleaning, split


def within(bounds: dict, source_words: int, target_words: int) -> bool:
    """Whether a pair of these word counts passes ``bounds`` (like :data:`LENGTH_BOUNDS`)."""
    lo_t, hi_t = bounds["target_words"]
    lo_s, hi_s = bounds["source_words"]
    ns, nt = source_words, target_words
    return (lo_t <= nt <= hi_t and lo_s <= ns <= hi_s
            and max(ns, nt) <= bounds["max_ratio"] * min(ns, nt) + 2)


def clean_pairs(pairs: list[dict[str, str]], bounds: dict | None = None,
                extra_bounds: Iterable[dict] = (),
                extra: list[dict[str, str]] | None = None,
                ) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Normalise, drop empty / untranslated / duplicate pairs, apply the length bounds.

    Args:
        pairs: raw ``{"source","target","key"}`` dicts.
        bounds: like :data:`LENGTH_BOUNDS` (the default).
        extra_bounds: more bounds (like :data:`EXTRA_BOUNDS`); a pair outside ``bounds``
            but inside one of these is appended to ``extra`` instead of being dropped.
        extra: the list that receives those pairs (they still count as length-filtered).

    Returns:
        (kept pairs, counts of each stage) - the counts are reported by ``prepare``.
    """
    b = bounds or LENGTH_BOUNDS
    extra_bounds = tuple(extra_bounds)
    counts = {"aligned": len(pairs)}
    seen: set[tuple[str, str]] = set()
    kept = []
    empty = same = dup = length = 0
    for p in pairs:
        s, t = normalise(p["source"]), normalise(p["target"])
        if not s or not t:
            empty += 1
            continue
        if s == t and len(s.split()) > 1:
            same += 1  # untranslated text (code samples, names) teaches only copying
            continue
        if (s, t) in seen:
            dup += 1
            continue
        seen.add((s, t))
        ns, nt = len(s.split()), len(t.split())
        if not within(b, ns, nt):
            length += 1
            if extra is not None and any(within(e, ns, nt) for e in extra_bounds):
                extra.append({"source": s, "target": t, "key": p["key"]})
            continue
        kept.append({"source": s, "target": t, "key": p["key"]})
    counts.update(empty=empty, untranslated=same, duplicates=dup, length_filtered=length, kept=len(kept))
    return kept, counts


def _bucket(source: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{source.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(pairs: list[dict[str, str]], seed: int = 1337) -> dict[str, list[dict[str, str]]]:
    """Split by the lower-cased normalised source: each source sentence is in ONE split.

    Args:
        pairs: cleaned pairs.
        seed: mixes into the hash (the default 1337 gives the reported split).
    """
    out: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    t_cut = SPLIT_FRACTIONS["test"]
    v_cut = t_cut + SPLIT_FRACTIONS["validation"]
    for p in pairs:
        u = _bucket(p["source"], seed)
        out["test" if u < t_cut else "validation" if u < v_cut else "train"].append(p)
    return out


# --------------------------------------------------------------------------- TFDS builder


@dataclass(eq=False)
class PairsConfig(tfds.core.BuilderConfig):
    """Builder config: which source, and (for tests) at most ``limit`` pairs per split."""

    spec: DataSpec = field(default_factory=lambda: DataSpec("help"))
    limit: int | None = None
    seed: int = 1337


class TranslationPairs(tfds.core.GeneratorBasedBuilder):
    """Cleaned, source-disjoint sentence pairs (``source``, ``target``, ``key``)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "LibreOffice help / Bible / Anki pairs, source-disjoint split.",
                     "1.1.0": "Splits `extra` (training-only pairs outside the length bounds) "
                              "and `test_short` (held-out one-word targets)."}

    def __init__(self, *, spec: DataSpec, limit: int | None = None, seed: int = 1337, **kwargs):
        name = spec.name + (f"_limit{limit}" if limit else "") + (f"_seed{seed}" if seed != 1337 else "")
        kwargs.setdefault("data_dir", str(tfds_dir()))
        super().__init__(config=PairsConfig(name=name, spec=spec, limit=limit, seed=seed,
                                            version=self.VERSION), **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "source": tfds.features.Text(),
                "target": tfds.features.Text(),
                "key": tfds.features.Text(),
            }),
            supervised_keys=("source", "target"),
            description=__doc__,
        )

    def _split_generators(self, dl_manager):
        splits, counts = build_splits(self.builder_config.spec, self.builder_config.limit,
                                      self.builder_config.seed)
        atomic_write_json(Path(self.data_dir).parent / f"{self.builder_config.name}.counts.json", counts)
        return {name: self._generate_examples(rows) for name, rows in splits.items()}

    def _generate_examples(self, rows):
        for i, r in enumerate(rows):
            yield f"{i}", r


def build_splits(spec: DataSpec, limit: int | None = None, seed: int = 1337):
    """Raw pairs -> cleaned -> split (-> at most ``limit`` per split); returns (splits, counts).

    Besides ``train``/``validation``/``test`` (within the length bounds) the help sources
    get ``extra`` (pairs within :data:`EXTRA_BOUNDS` whose source falls in the training
    share and is no held-out source, for training only) and ``test_short`` (the one-word
    targets whose source falls in the test share: a report of short interface strings).
    """
    supplement: list[dict[str, str]] = []
    kept, counts = clean_pairs(raw_pairs(spec),
                               BIBLE_LENGTH_BOUNDS if spec.kind == "bible" else LENGTH_BOUNDS,
                               EXTRA_BOUNDS if spec.kind == "help" else (), supplement)
    splits = split_pairs(kept, seed)
    held_out = {p["source"].lower() for name in ("validation", "test") for p in splits[name]}
    by_split = split_pairs(supplement, seed)
    splits["extra"] = [p for p in by_split["train"] if p["source"].lower() not in held_out]
    splits["test_short"] = [p for p in by_split["test"] if len(p["target"].split()) == 1]
    if limit:
        splits = {k: v[:limit] for k, v in splits.items()}
    counts.update({f"{k}_pairs": len(v) for k, v in splits.items()})
    counts.update({f"{k}_sources": len({r["source"].lower() for r in v}) for k, v in splits.items()})
    return splits, counts


def prepare(spec: DataSpec, limit: int | None = None, seed: int = 1337,
            data_dir: str | None = None) -> tuple[TranslationPairs, dict]:
    """Build (once) the TFDS dataset for ``spec`` and return (builder, counts)."""
    builder = TranslationPairs(spec=spec, limit=limit, seed=seed,
                               **({"data_dir": data_dir} if data_dir else {}))
    builder.download_and_prepare()
    counts_file = Path(builder.data_dir).parent / f"{builder.builder_config.name}.counts.json"
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    return builder, counts


def load_splits(spec: DataSpec, limit: int | None = None, seed: int = 1337,
                data_dir: str | None = None) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """Prepare if needed and return ``{split: [(source, target), ...]}`` plus the counts.

    The splits are :data:`SPLITS` (``extra`` and ``test_short`` are empty for sources
    other than the help).

    The data is small (tens of thousands of short pairs), so it is held in memory as
    Python strings; training pipelines build ``tf.data`` from these lists.
    """
    builder, counts = prepare(spec, limit, seed, data_dir)
    out = {}
    for split in SPLITS:
        ds = builder.as_dataset(split=split)
        out[split] = [(r["source"].decode("utf-8"), r["target"].decode("utf-8"))
                      for r in tfds.as_numpy(ds)]
    return out, counts
