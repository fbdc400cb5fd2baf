"""Translation data: real LibreOffice help pairs through the real fetch path, the TFDS
builder on a subset, alignment sanity, cleaning, split disjointness, user formats."""

from __future__ import annotations

import random
import re

import pytest

from apps.translation import data

NUM = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")


def number_agreement(pairs) -> float:
    """Share of pairs with numbers whose source and target hold the same numbers."""
    with_numbers = [(s, t) for s, t in pairs if NUM.search(s)]
    same = [sorted(NUM.findall(s)) == sorted(NUM.findall(t)) for s, t in with_numbers]
    return sum(same) / max(1, len(same)), len(same)


@pytest.fixture(scope="module")
def full_pairs():
    return data.help_pairs(progress=False)


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    splits, counts = data.load_splits(data.parse_spec("help"), limit=300, data_dir=str(d))
    return splits, counts


def test_builder_on_real_subset(subset):
    splits, counts = subset
    assert set(splits) == {"train", "validation", "test", "extra", "test_short"}
    assert len(splits["train"]) == 300 and len(splits["test"]) == 300
    assert 0 < len(splits["validation"]) <= 300
    # The counts describe the whole cleaned corpus, not just the subset.
    assert counts["aligned"] > 40000 and 15000 < counts["kept"] < 25000
    for s, t in splits["train"][:50]:
        assert s and t and s == s.strip() and "  " not in s
    train_src = {s.lower() for s, _ in splits["train"]}
    assert not train_src & {s.lower() for s, _ in splits["test"]}


def test_pairs_really_are_translations(subset):
    splits, _ = subset
    pairs = splits["train"] + splits["test"]
    agree, n = number_agreement(pairs)
    assert n >= 10 and agree >= 0.85, (agree, n)
    # The check can fail: on deliberately misaligned pairs it does.
    rng = random.Random(0)
    targets = [t for _, t in pairs]
    rng.shuffle(targets)
    wrong, _ = number_agreement(list(zip([s for s, _ in pairs], targets)))
    assert wrong < 0.4
    # Basic names and technical identifiers (CamelCase, with parentheses) are kept as is.
    ident = re.compile(r"\b[A-Z][a-z]+[A-Z]\w*\b")
    hits = [(s, t) for s, t in pairs if ident.search(s)]
    kept = [all(w in t for w in ident.findall(s)) for s, t in hits]
    assert not hits or sum(kept) / len(kept) >= 0.7


def test_full_corpus_counts_and_source_disjoint_split(full_pairs):
    kept, counts = data.clean_pairs(full_pairs)
    assert counts["kept"] == len(kept)
    assert sum(counts[k] for k in ("empty", "untranslated", "duplicates", "length_filtered",
                                   "kept")) == counts["aligned"]
    splits = data.split_pairs(kept)
    assert 1200 <= len(splits["test"]) <= 1800
    src = {k: {p["source"].lower() for p in v} for k, v in splits.items()}
    assert not src["train"] & src["test"]
    assert not src["train"] & src["validation"]
    for p in kept:
        n = len(p["target"].split())
        assert 2 <= n <= 15
    # The menu arrow survives as a token.
    assert any(" ▸ " in p["source"] for p in kept)


def test_extra_pairs_are_training_only_and_leave_the_held_out_splits_alone(full_pairs):
    splits, counts = data.build_splits(data.DataSpec("help"))
    # The held-out splits are exactly those of the length bounds alone.
    kept, _ = data.clean_pairs(full_pairs)
    plain = data.split_pairs(kept)
    for name in ("train", "validation", "test"):
        assert splits[name] == plain[name]
    held_out = {p["source"].lower() for n in ("validation", "test") for p in splits[n]}
    held_out |= {p["source"].lower() for p in splits["test_short"]}
    extra = splits["extra"]
    assert len(extra) > 3000 and counts["extra_pairs"] == len(extra)
    assert not {p["source"].lower() for p in extra} & held_out
    for p in extra:
        ns, nt = len(p["source"].split()), len(p["target"].split())
        assert not data.within(data.LENGTH_BOUNDS, ns, nt)
        assert (nt == 1 and ns <= 4) or 16 <= nt <= 20
    assert any(len(p["target"].split()) == 1 for p in extra)
    assert any(len(p["target"].split()) > 15 for p in extra)
    # The one-word report split: held out with the test sources, never in training.
    short = splits["test_short"]
    assert 200 < len(short) < 800
    assert all(len(p["target"].split()) == 1 for p in short)
    train_src = {p["source"].lower() for n in ("train", "extra") for p in splits[n]}
    assert not {p["source"].lower() for p in short} & train_src


def test_clean_pairs_keeps_extra_pairs_apart():
    raw = [{"source": "Abrir el archivo", "target": "Open the file", "key": "a"},
           {"source": "Ejemplo", "target": "Example", "key": "b"},
           {"source": "uno dos", "target": " ".join(["w"] * 18), "key": "c"},
           {"source": "uno", "target": " ".join(["w"] * 25), "key": "d"}]
    extra: list = []
    kept, counts = data.clean_pairs(raw, data.LENGTH_BOUNDS, data.EXTRA_BOUNDS, extra)
    assert [p["key"] for p in kept] == ["a"] and [p["key"] for p in extra] == ["b"]
    # 18 words from 2 is beyond the 3x ratio; 25 words is beyond both bounds.
    assert counts["length_filtered"] == 3


def test_normalise():
    assert data.normalise("  Ver\u00a0\n▸Barra\tde  herramientas ") == "Ver ▸ Barra de herramientas"
    assert data.normalise("e\u0301") == "é"  # NFC


def test_parse_spec_and_errors(tmp_path):
    assert data.parse_spec(None) == data.DataSpec("help", "es", "en-US")
    assert data.parse_spec("help:fr").source_lang == "fr"
    assert data.parse_spec("help:de:fr").target_lang == "fr"
    assert data.parse_spec("bible").kind == "bible"
    for bad, msg in (("nope", "unknown data spec"), ("anki:", "needs a path"),
                     ("anki:/does/not/exist.txt", "not found"), ("help:es:es", "both"),
                     ("help:??", "bad help spec")):
        with pytest.raises(data.DataError, match=msg):
            data.parse_spec(bad)


def test_anki_format(tmp_path):
    f = tmp_path / "spa.txt"
    f.write_text("Go.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org\nHi.\tHola.\n\n",
                 encoding="utf-8")
    pairs = data.anki_pairs(f)
    assert [(p["source"], p["target"]) for p in pairs] == [("Ve.", "Go."), ("Hola.", "Hi.")]
    bad = tmp_path / "bad.txt"
    bad.write_text("only one column\n", encoding="utf-8")
    with pytest.raises(data.DataError, match="bad.txt:1"):
        data.anki_pairs(bad)


def test_clean_pairs_rules():
    raw = [
        {"source": "Abrir el archivo", "target": "Open the file", "key": "a"},
        {"source": "Abrir  el archivo", "target": "Open the  file", "key": "b"},  # duplicate
        {"source": "", "target": "x y", "key": "c"},
        {"source": "print(x) y", "target": "print(x) y", "key": "d"},  # untranslated
        {"source": "uno", "target": " ".join(["w"] * 16), "key": "e"},  # too long
    ]
    kept, counts = data.clean_pairs(raw)
    assert [p["key"] for p in kept] == ["a"]
    assert counts == {"aligned": 5, "empty": 1, "untranslated": 1, "duplicates": 1,
                      "length_filtered": 1, "kept": 1}
