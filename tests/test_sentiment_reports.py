"""Sentiment reports: calibration, the contrastive probe set, the out-of-domain sentences,
the random crops and the temperature folded into the model."""

from __future__ import annotations

import numpy as np
import pytest

from apps.sentiment import calibration, ood, probes
from rnnkit.errors import DataError


def test_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-true_logits))).astype(np.int64)
    # A model three times too confident: its logits are the true ones times 3.
    temperature = calibration.fit_temperature(3.0 * true_logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.08)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    before = calibration.reliability(sig(3.0 * true_logits), labels)["ece"]
    after = calibration.reliability(sig(3.0 * true_logits / temperature), labels)["ece"]
    assert before > 0.05 and after < 0.02
    with pytest.raises(ValueError, match="same"):
        calibration.fit_temperature(np.zeros(3), np.zeros(4))


def test_reliability_bins_and_plot(tmp_path):
    probs = np.array([0.9, 0.9, 0.9, 0.9, 0.2, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0])
    rel = calibration.reliability(probs, labels, bins=5)
    counted = [b for b in rel["bins"] if b["count"]]
    assert [b["count"] for b in counted] == [2, 4]  # confidences 0.8 and 0.9
    # bin of 0.8: both right (acc 1.0, conf 0.8); bin of 0.9: 3 of 4 right (0.75 vs 0.9)
    assert rel["ece"] == pytest.approx((2 * 0.2 + 4 * 0.15) / 6)
    png = calibration.plot_reliability({"model": rel}, tmp_path / "r.png", title="t")
    assert open(png, "rb").read(4) == b"\x89PNG"


def test_probe_set_is_well_formed_and_scored():
    items = probes.load_probes()
    pairs = {p.pair for p in items}
    assert len(pairs) >= 40 and len(items) == 2 * len(pairs)
    assert {p.kind for p in items} == set(probes.KINDS)
    assert all(len(p.text.split()) < 20 for p in items)
    labels = np.array([p.label for p in items], dtype=float)
    perfect = probes.score_probes(labels * 0.8 + 0.1, items)
    assert perfect["pair_accuracy"] == 1.0 and perfect["pairs_wrong"] == []
    assert perfect["max_confidence"] == pytest.approx(0.9)
    short = sum(len(p.text.split()) < 10 for p in items)
    assert perfect["short_items"] == short > 20 and perfect["short_over_0_99"] == 0
    sure = probes.score_probes(np.where(labels == 1, 0.995, 0.2), items)
    assert sure["short_over_0_99"] == sum(len(p.text.split()) < 10 and p.label == 1
                                          for p in items)
    negative = probes.score_probes(np.full(len(items), 0.2), items)
    assert negative["item_accuracy"] == 0.5 and negative["pair_accuracy"] == 0.0
    assert sorted(negative["by_kind"]) == sorted(probes.KINDS)
    with pytest.raises(ValueError, match="probabilities"):
        probes.score_probes(np.zeros(3), items)


def test_probe_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "p.tsv"
    bad.write_text("1\tnegation\t0\tNot good.\n1\tnegation\t0\tBad.\n", encoding="utf-8")
    with pytest.raises(DataError, match="pair 1"):
        probes.load_probes(bad)
    bad.write_text("1\tsarcasm\t0\tSure, great.\n", encoding="utf-8")
    with pytest.raises(DataError, match="p.tsv:1"):
        probes.load_probes(bad)


def test_out_of_domain_sentences_fetch_and_score():
    sets = ood.load_sets()
    assert sorted(sets) == sorted(ood.SETS)
    for name in ("amazon", "yelp", "imdb-sentences"):
        texts, labels = sets[name]
        assert len(texts) == 1000 and labels.mean() == 0.5 and all(texts)
    texts, _ = sets["yelp"]
    assert "Crust is not good." in texts
    # The VADER sets: texts rated at least one step from neutral, both classes present.
    sizes = {name: len(sets[name][0]) for name in
             ("tweets", "amazon-snippets", "nyt-editorials", "movie-snippets")}
    assert sizes == {"tweets": 2667, "amazon-snippets": 2455, "nyt-editorials": 1554,
                     "movie-snippets": 9173}
    tweets = dict(zip(*sets["tweets"]))
    assert tweets["Yay. Another good phone interview."] == 1  # mean rating +1.44
    assert not any("&amp;" in t for t in tweets)  # HTML entities decoded
    assert set(ood.OUT_OF_DOMAIN) | set(ood.OTHER_MOVIE_TEXTS) == set(ood.SETS)
    pooled_texts, pooled_labels = ood.pooled(sets, ood.OUT_OF_DOMAIN)
    assert len(pooled_texts) == len(pooled_labels) == 1000 + 1000 + 2667 + 2455 + 1554
    assert ood.balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == 0.5
    with pytest.raises(DataError, match="unknown sentence set"):
        ood.read_set(ood.fetch_tarball(), "tweets")
    with pytest.raises(DataError, match="unknown VADER set"):
        ood.read_vader_set(ood.fetch_vader(), "amazon")
    with pytest.raises(DataError, match="unknown sentence set"):
        ood.load_sets(("amazon", "reddit"))


def test_out_of_domain_report_pools_sets_in_label_order(monkeypatch):
    from apps.sentiment import train

    rng = np.random.default_rng(0)
    sets = {}
    for name in reversed(ood.OUT_OF_DOMAIN):  # not the order the pooled row uses
        labels = rng.integers(0, 2, 40)
        sets[name] = ([f"{name} {i} {'good' if y else 'bad'}" for i, y in enumerate(labels)],
                      labels)
    monkeypatch.setattr(ood, "load_available_sets", lambda: (sets, {"npm": "npm missing"}))

    def right(texts):
        return np.array([0.9 if t.endswith("good") else 0.1 for t in texts])

    def yes_on_tweets(texts):
        return np.array([0.9 if t.startswith("tweets") else 0.1 for t in texts])

    report = train.out_of_domain_report({"rnn": right, "other": yes_on_tweets})
    pooled = report[ood.POOLED]
    assert pooled["sets"] == list(ood.OUT_OF_DOMAIN) and pooled["examples"] == 200
    assert pooled["rnn"]["balanced_accuracy"] == 1.0  # misaligned labels would break this
    texts, labels = ood.pooled(sets, ood.OUT_OF_DOMAIN)
    expected = ood.balanced_accuracy(labels, (yes_on_tweets(texts) >= 0.5).astype(int))
    assert pooled["other"]["balanced_accuracy"] == pytest.approx(expected)
    assert report["skipped_sources"] == {"npm": "npm missing"}
    monkeypatch.setattr(ood, "load_available_sets", lambda: ({}, {"npm": "a", "vader": "b"}))
    assert train.out_of_domain_report({"rnn": right}) == {"skipped": "a; b"}


def test_vader_ratings_parse_filter_and_refuse_bad_lines():
    text = ("1\t2.5\tLoved it &amp; more.\r\n2\t-0.4\tIt is a phone.\n"
            "3\t-1.0\tBroke in a day.\n\n4\t0.99\tFine, I guess.\n5\t1.5\t   \n")
    texts, labels = ood.parse_vader_ratings(text, "demo.txt")
    assert texts == ["Loved it & more.", "Broke in a day."] and labels.tolist() == [1, 0]
    texts, labels = ood.parse_vader_ratings(text, "demo.txt", margin=0.3)
    assert labels.tolist() == [1, 0, 0, 1]
    for bad, match in [("1\t2.0\n", r"demo.txt:1: expected ID, rating and text"),
                       ("1\t2.0\tok\n2\tgood\tok\n", r"demo.txt:2: rating 'good'"),
                       ("1\t4.5\tok\n", "outside -4 .. 4"),
                       ("1\tnan\tok\n", "outside -4 .. 4")]:
        with pytest.raises(DataError, match=match):
            ood.parse_vader_ratings(bad, "demo.txt")


def test_paired_difference_interval():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 500)
    truth_noise = rng.random(1000)
    weak = np.where(truth_noise < 0.70, labels, 1 - labels)  # about 70 % right
    strong = np.where(truth_noise < 0.85, labels, 1 - labels)  # right wherever weak is
    gap = ood.paired_difference(labels, strong, weak)
    assert gap["difference"] == pytest.approx(
        ood.balanced_accuracy(labels, strong) - ood.balanced_accuracy(labels, weak))
    assert 0.0 < gap["low"] <= gap["difference"] <= gap["high"]  # a clear win
    assert gap["only_b_right"] == 0 and gap["only_a_right"] == int(
        ((strong == labels) & (weak != labels)).sum())
    same = ood.paired_difference(labels, weak, weak)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    # Two predictors that trade mistakes, five each way in each class: equal balanced
    # accuracy, and an interval on both sides of zero.
    swapped = weak.copy()
    for c in (0, 1):
        right = np.flatnonzero((labels == c) & (weak == labels))[:5]
        wrong = np.flatnonzero((labels == c) & (weak != labels))[:5]
        swapped[np.r_[right, wrong]] = 1 - swapped[np.r_[right, wrong]]
    tie = ood.paired_difference(labels, swapped, weak)
    assert tie["difference"] == pytest.approx(0.0)
    assert tie["low"] < 0.0 < tie["high"] and tie["only_a_right"] == tie["only_b_right"] == 10
    with pytest.raises(ValueError, match="both classes"):
        ood.paired_difference(np.zeros(4, int), np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="shapes"):
        ood.paired_difference(labels, weak[:10], weak)


def test_random_crops_and_temperature_layer():
    import tensorflow as tf

    from apps.sentiment.model import ScaleLogit
    from apps.sentiment.train import random_crops

    tf.random.set_seed(1)
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.ragged.constant([list(range(1, 201))] * 200), tf.ones(200))
    ).map(lambda ids, y: (ids, y))
    lengths = [len(ids) for ids, _ in random_crops(ds, 0.5, 4, 40, 0).as_numpy_iterator()]
    cropped = [n for n in lengths if n != 200]
    assert 60 < len(cropped) < 140 and min(cropped) >= 4 and max(cropped) <= 40
    assert random_crops(ds, 0.0, 4, 40, 0) is ds
    assert ScaleLogit(0.5)(tf.constant([[4.0], [-2.0]])).numpy().tolist() == [[2.0], [-1.0]]
