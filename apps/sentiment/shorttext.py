"""Compare trained run folders without touching the test split.

``python -m apps.sentiment.shorttext RUN_DIR [RUN_DIR ...]`` prints, for each run folder
``train`` wrote, its validation figures (from ``run.json``: best validation accuracy, the
5-30-token window accuracy, the fitted temperature, the language-model summary) and the
short-text reports of its ``model.keras``: the contrastive probes and the out-of-domain
sentences, with how many texts of under ten words get a confidence above 0.99. It writes
the same to ``<RUN_DIR>/reports/short_texts.json``.

Variants are chosen on the validation figures only; the probe and sentence figures are
reports (they say whether short-text over-confidence moved), never a selection criterion.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rnnkit.atomic import atomic_write_json
from rnnkit.errors import DataError, ModelError

from .ood import POOLED


def report(run_dir: str | Path, batch_size: int = 128) -> dict[str, Any]:
    """The validation and short-text figures of one run folder.

    Args:
        run_dir: a folder with ``model.keras`` and ``run.json`` (``train --output``).
        batch_size: scoring batch size.

    Raises:
        ModelError: the folder has no trained model.
    """
    import json

    import keras

    from . import probes
    from .train import out_of_domain_report, predict_proba

    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file() or not (run_dir / "run.json").is_file():
        raise ModelError(f"no trained model in {run_dir}: run `rnnkit sentiment train "
                         f"--output {run_dir}` first")
    summary = json.loads((run_dir / "run.json").read_text())
    train = summary.get("train", {})
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)

    def score(texts: list[str]):
        return predict_proba(model, texts, batch_size)

    probe = probes.probe_report(score)
    ood = out_of_domain_report({"rnn": score})
    lm = train.get("language_model") or {}
    out = {
        "run": str(run_dir),
        "options": {k: summary["options"].get(k) for k in (
            "pretrain_lm", "gradual_unfreeze", "lr_decay", "crop_prob", "glove", "lm_epochs")},
        "best_val_accuracy": train.get("best_val_accuracy"),
        "val_window_accuracy": train.get("val_window_accuracy"),
        "best_epoch": train.get("best_epoch"),
        "temperature": train.get("temperature"),
        "train_seconds": summary.get("train_seconds"),
        "language_model": {k: lm.get(k) for k in ("seconds", "cached", "heldout_perplexity")}
        if lm else None,
        "probes": {k: probe[k] for k in ("pair_accuracy", "item_accuracy", "max_confidence",
                                          "short_items", "short_over_0_99")},
        "out_of_domain": ood if "skipped" in ood else {
            name: row["rnn"] for name, row in ood.items()
            if isinstance(row, dict) and "rnn" in row},
    }
    atomic_write_json(run_dir / "reports" / "short_texts.json", out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print :func:`report` for each run folder given (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a.startswith("-") for a in args):
        print(__doc__.strip().splitlines()[2])
        return 0 if args and args[0] in ("-h", "--help") else 2
    for run_dir in args:
        try:
            r = report(run_dir)
        except (ModelError, DataError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{r['run']}: validation accuracy {r['best_val_accuracy']:.4f} (epoch "
              f"{r['best_epoch']}), window accuracy {r['val_window_accuracy']:.4f}, "
              f"T = {r['temperature']:.3f}")
        p = r["probes"]
        print(f"  probes: pairs {p['pair_accuracy']:.3f}, items {p['item_accuracy']:.3f}, "
              f"{p['short_over_0_99']} of {p['short_items']} under 10 words above 0.99")
        for name, row in r["out_of_domain"].items():
            if isinstance(row, dict) and name == POOLED:  # no short-text counts pooled
                print(f"  {name}: balanced accuracy {row['balanced_accuracy']:.4f}")
            elif isinstance(row, dict):
                print(f"  {name}: balanced accuracy {row['balanced_accuracy']:.4f}, "
                      f"{row['short_over_0_99']} of {row['short_examples']} under 10 words "
                      "above 0.99")
    return 0


if __name__ == "__main__":
    sys.exit(main())
