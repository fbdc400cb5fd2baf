"""Fish Fillets NG actors (Debian ``fillets-ng-data-cs``/``-nl``): the app's original data.

The reading rules (file code ``m`` = the small fish, a female actor; ``v`` = the big fish, a
male actor; side characters dropped) live in :mod:`apps.voice_gender.data`; this reader only
re-labels those clips as records of the four documented speakers.
"""

from __future__ import annotations

from .base import Clip
from ..speakers import speaker


def clips() -> list[Clip]:
    """Every labelled Fillets clip, as records of the four actors."""
    from ..data import fetch_fillets, fillets_clips

    out = []
    for c in fillets_clips(fetch_fillets()):
        spk = speaker(c.speaker)  # fillets-<lang>-<sex>: the row must exist and agree
        if spk.sex != c.label:
            raise ValueError(f"{c.path}: the Fillets reader says {c.label}, the speaker table "
                             f"says {spk.sex} for {spk.id}")
        out.append(Clip(c.path, spk.sex, spk.id, "fillets", spk.language, spk.group))
    return out
