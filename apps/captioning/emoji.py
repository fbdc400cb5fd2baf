"""Emoji art sets as captioned drawings: several artists' pictures of the same named things.

Four artists have drawn the same Unicode emoji, each with a name ("RED APPLE", "DOG",
"BICYCLE"). Their drawings come from npm tarballs (``npm pack NAME@VERSION``; nothing is
installed), hash-checked against the sha512 the registry publishes and cached under
``$RNNKIT_CACHE/raw/npm``:

=============  ====================================  ==============  =====================
art set        package                               licence         drawn by
=============  ====================================  ==============  =====================
``noto``       ``@iconify-json/noto@1.2.9`` (SVG)    Apache-2.0      Google (Noto Emoji)
``twemoji``    ``@iconify-json/twemoji@1.2.5`` (SVG)  CC-BY-4.0       Twitter (Twemoji)
``openmoji``   ``@iconify-json/openmoji@1.2.29``     CC-BY-SA-4.0    OpenMoji (HfG Gmuend)
``fluent``     ``@iconify-json/fluent-emoji@1.2.7``  MIT             Microsoft (Fluent)
=============  ====================================  ==============  =====================

``noto-png`` and ``twemoji-png`` are the same two artists' 64x64 PNGs from
``emoji-datasource-google@16.0.0`` / ``emoji-datasource-twitter@16.0.0`` (their
``art_set`` is still ``noto`` / ``twemoji``); the SVGs render sharp at any size, so the
default sets are the four SVG ones. Apple's and Facebook's emoji are not offered: Apple's
are not licensed for this use and Facebook's carry no clear licence.

Which emoji, and their captions
-------------------------------
``emoji-datasource@16.0.0`` (metadata only) gives every emoji's category and subcategory;
only concrete things are kept: animals, plants, food and drink, places and buildings,
vehicles, weather, objects, sports and games, clothing and a few body parts. Flags,
symbols, keycaps, clocks showing a time, faces and people (and so every skin-tone
variant) are dropped. The name is the CLDR short name (``red-apple``) that the Iconify
sets key their icons by. Captions follow the Tux Paint stamps' style, a noun phrase a
person would say, with the right article: "a red apple", "an owl", "cherries", "a pair of
scissors". Names a person would not say are rewritten ("honeybee" -> "a bee", "dog face"
-> "a dog", "hourglass not done" -> "an hourglass", "1st place medal" -> "a gold medal")
and names that are not a thing one can draw ("muted speaker", "chart increasing", "foggy")
are dropped (:data:`CAPTION_OVERRIDES`).

Every record keeps its licence, its attribution and where it came from.

Usage::

    records = emoji_records()                       # all four SVG sets, 224x224 RGBA
    stamps = [r.to_stamp() for r in records]        # data.Stamp objects for compose()
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rnnkit.fetch import NpmPackage, cache_lock, npm_tarball

__all__ = [
    "ART_SETS",
    "CAPTION_OVERRIDES",
    "DEFAULT_SETS",
    "KEPT_SUBCATEGORIES",
    "METADATA_PACKAGE",
    "ArtSet",
    "EmojiRecord",
    "art_set_split",
    "caption_for",
    "emoji_catalogue",
    "emoji_records",
    "head_noun",
    "png_bytes_to_rgba",
    "read_tarball_members",
    "render_svg",
]


# ---------------------------------------------------------------------------------------
# npm tarballs
# ---------------------------------------------------------------------------------------

def read_tarball_members(tarball: str | os.PathLike[str], wanted: set[str] | None = None,
                         missing_ok: bool = False) -> dict[str, bytes]:
    """Reads members of a ``.tgz`` into memory in one pass.

    Args:
        tarball: the archive.
        wanted: member names to read (e.g. ``{"package/icons.json"}``); None reads every
            regular file.
        missing_ok: return what was found instead of raising when some are missing.

    Raises:
        KeyError: naming the first wanted member the archive lacks (unless ``missing_ok``).
    """
    out: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tf:
        for info in tf:
            if info.isfile() and (wanted is None or info.name in wanted):
                f = tf.extractfile(info)
                assert f is not None
                out[info.name] = f.read()
    if wanted is not None and not missing_ok:
        missing = sorted(wanted - out.keys())
        if missing:
            raise KeyError(f"{Path(tarball).name} has no member {missing[0]!r}")
    return out


# ---------------------------------------------------------------------------------------
# The art sets
# ---------------------------------------------------------------------------------------

METADATA_PACKAGE = NpmPackage(
    "emoji-datasource", "16.0.0",
    "sha512-/qHKqK5Nr3+8zhgO6kHmF43Fm5C8HNn0AaFRIpgw8HF3+uF0Vfc8jgLI1ZQS5ba1vBzksS8NBCjHejwLb2D/Sg==")


@dataclasses.dataclass(frozen=True)
class ArtSet:
    """One source of emoji drawings.

    Attributes:
        key: the name :func:`emoji_records` takes (``"openmoji"``, ``"noto-png"``).
        art_set: the artist's set the drawings belong to (``"noto"`` for both ``noto`` and
            ``noto-png``): what a split held out by art set holds out.
        package: the npm package.
        kind: ``"iconify"`` (SVG bodies in ``package/icons.json``) or ``"datasource"``
            (64x64 PNGs under ``package/img/<png_folder>/64/``).
        licence: SPDX identifier of the drawings' licence.
        author: who drew them, as the package names them.
        homepage: the artists' project page.
        png_folder: the folder name under ``img/`` (datasource sets only).
    """

    key: str
    art_set: str
    package: NpmPackage
    kind: str
    licence: str
    author: str
    homepage: str
    png_folder: str = ""


ART_SETS: dict[str, ArtSet] = {a.key: a for a in (
    ArtSet("noto", "noto", NpmPackage(
        "@iconify-json/noto", "1.2.9",
        "sha512-DQiuXENbun41ch+XPSV55H9FaWKpHTyz46YIKtSaKYD4fIDDzL1tR6H4np/T38jfrTAeI3rcKF0mqHYeZVAuaw=="),
        "iconify", "Apache-2.0", "Google Inc", "https://github.com/googlefonts/noto-emoji"),
    ArtSet("twemoji", "twemoji", NpmPackage(
        "@iconify-json/twemoji", "1.2.5",
        "sha512-uKpuIEV0v6K5BW3Mjdyl+XKFVAbbcPxAgifKvEMtZoUZB5+YiY5zaMm2uNNCxyXzAWU9yNLlj41WU6/mvgALsw=="),
        "iconify", "CC-BY-4.0", "Twitter", "https://github.com/jdecked/twemoji"),
    ArtSet("openmoji", "openmoji", NpmPackage(
        "@iconify-json/openmoji", "1.2.29",
        "sha512-vXdhkqcXVSO6suy+m9LbcUM3OdVyuNOtpV8/als/WqfkQIRxevL5Geb/g+6GH/Qwnq1OqksEmaDGTCmZ5nFKJQ=="),
        "iconify", "CC-BY-SA-4.0", "OpenMoji", "https://github.com/hfg-gmuend/openmoji"),
    ArtSet("fluent", "fluent", NpmPackage(
        "@iconify-json/fluent-emoji", "1.2.7",
        "sha512-D8G6bKAyIsyxP1rzZtIWr/gg/fO4Rg1+DyCWlfqKK4h8W+4Em/Y0P6QYgJUQTlUcagzJvSyg+9OBv4hz4Hc/QA=="),
        "iconify", "MIT", "Microsoft Corporation", "https://github.com/microsoft/fluentui-emoji"),
    ArtSet("noto-png", "noto", NpmPackage(
        "emoji-datasource-google", "16.0.0",
        "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="),
        "datasource", "Apache-2.0", "Google Inc", "https://github.com/googlefonts/noto-emoji",
        png_folder="google"),
    ArtSet("twemoji-png", "twemoji", NpmPackage(
        "emoji-datasource-twitter", "16.0.0",
        "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ=="),
        "datasource", "CC-BY-4.0", "Twitter, Inc and other contributors",
        "https://github.com/jdecked/twemoji", png_folder="twitter"),
)}
DEFAULT_SETS = ("noto", "twemoji", "openmoji", "fluent")
# Where the CLDR short names come from (any Iconify emoji set maps code points to them).
_NAME_SOURCE = "twemoji"


# ---------------------------------------------------------------------------------------
# Which emoji, and their captions
# ---------------------------------------------------------------------------------------

KEPT_SUBCATEGORIES = frozenset({
    # Animals & Nature
    "animal-mammal", "animal-bird", "animal-amphibian", "animal-reptile", "animal-marine",
    "animal-bug", "plant-flower", "plant-other",
    # Food & Drink
    "food-fruit", "food-vegetable", "food-prepared", "food-asian", "food-sweet", "drink",
    "dishware",
    # Travel & Places
    "place-map", "place-geographic", "place-building", "place-religious", "place-other",
    "transport-ground", "transport-water", "transport-air", "hotel", "time",
    "sky & weather",
    # Activities
    "event", "award-medal", "sport", "game", "arts & crafts",
    # Objects
    "clothing", "sound", "music", "musical-instrument", "phone", "computer",
    "light & video", "book-paper", "money", "mail", "writing", "office", "lock", "tool",
    "science", "medical", "household", "other-object",
    # People & Body: only the parts that are things (no faces, no skin-tone people).
    "body-parts",
})

# CLDR short name -> the caption a person would write, or None to leave the emoji out.
# Everything not listed gets "a"/"an" + the name (see :func:`caption_for`).
CAPTION_OVERRIDES: dict[str, str | None] = {
    # body parts
    "flexed-biceps": "a flexed arm", "mechanical-arm": "a robot arm",
    "mechanical-leg": "a robot leg", "ear-with-hearing-aid": "an ear with a hearing aid",
    "anatomical-heart": "a heart", "lungs": "a pair of lungs", "eyes": "a pair of eyes",
    "biting-lip": None,
    # animals
    "pig-nose": "a pig's nose", "paw-prints": "paw prints", "ewe": "a sheep",
    "ram": "a ram", "hatching-chick": "a chick hatching from an egg",
    "front-facing-baby-chick": "a baby chick", "spouting-whale": "a whale spouting water",
    "lady-beetle": "a ladybug", "honeybee": "a bee", "bug": "a caterpillar",
    "black-bird": "a blackbird", "t-rex": "a t-rex", "sauropod": "a dinosaur",
    "two-hump-camel": "a camel", "microbe": "a germ", "wing": "a bird's wing",
    # plants
    "leaf-fluttering-in-wind": "leaves blowing in the wind", "sheaf-of-rice": "a sheaf of rice",
    "nest-with-eggs": "a nest with eggs", "rosette": "a rosette flower",
    "white-flower": "a white flower", "blossom": "a yellow flower",
    # food
    "ear-of-corn": "a corn cob", "leafy-green": "a lettuce", "root-vegetable": "a radish",
    "peanuts": "peanuts", "beans": "beans", "grapes": "a bunch of grapes",
    "cherries": "cherries", "blueberries": "blueberries", "kiwi-fruit": "a kiwi fruit",
    "bread": "a loaf of bread", "baguette-bread": "a baguette", "pancakes": "a stack of pancakes",
    "cheese-wedge": "a wedge of cheese", "meat-on-bone": "a piece of meat on a bone",
    "poultry-leg": "a chicken leg", "cut-of-meat": "a piece of meat", "bacon": "strips of bacon",
    "french-fries": "french fries", "falafel": "falafel balls", "egg": "an egg",
    "cooking": "a fried egg in a pan", "shallow-pan-of-food": "a pan of food",
    "pot-of-food": "a pot of stew", "fondue": "a fondue pot", "bowl-with-spoon": "a bowl with a spoon",
    "popcorn": "a box of popcorn", "butter": "a stick of butter", "salt": "a salt shaker",
    "canned-food": "a tin of food", "bento-box": "a bento box", "cooked-rice": "a bowl of rice",
    "curry-rice": "a plate of curry and rice", "steaming-bowl": "a bowl of noodles",
    "spaghetti": "a plate of spaghetti", "oden": "oden on a stick", "sushi": "sushi",
    "fish-cake-with-swirl": "a fish cake", "dango": "dango on a stick",
    "soft-ice-cream": "an ice cream cone", "shaved-ice": "a bowl of shaved ice",
    "ice-cream": "a bowl of ice cream", "shortcake": "a slice of cake", "candy": "a sweet",
    "custard": "a custard pudding", "honey-pot": "a pot of honey",
    "rice-cracker": "a rice cracker", "rice-ball": "a rice ball",
    # drink and dishware
    "glass-of-milk": "a glass of milk", "hot-beverage": "a cup of coffee",
    "teacup-without-handle": "a teacup", "sake": "a bottle of sake",
    "bottle-with-popping-cork": "a bottle of champagne", "wine-glass": "a glass of wine",
    "clinking-beer-mugs": "two beer mugs", "clinking-glasses": "two glasses",
    "tumbler-glass": "a glass", "pouring-liquid": "a glass pouring liquid",
    "cup-with-straw": "a cup with a straw", "bubble-tea": "a cup of bubble tea",
    "beverage-box": "a juice box", "mate": "a cup of mate", "ice": "ice cubes",
    "chopsticks": "a pair of chopsticks", "fork-and-knife-with-plate": "a plate with a fork and knife",
    "fork-and-knife": "a fork and a knife", "kitchen-knife": "a knife",
    # places
    "globe-showing-europe-africa": "a globe", "globe-showing-americas": "a globe",
    "globe-showing-asia-australia": "a globe", "globe-with-meridians": None,
    "map-of-japan": "a map of japan", "mount-fuji": "a mountain",
    "snow-capped-mountain": "a snowy mountain", "camping": "a tent by a lake",
    "beach-with-umbrella": "a beach with an umbrella", "national-park": "a national park",
    "building-construction": "a crane at a building site", "brick": "a pile of bricks",
    "wood": "a pile of logs", "houses": "a row of houses", "derelict-house": "an old house",
    "house-with-garden": "a house with a garden", "japanese-post-office": "a post office",
    "love-hotel": None, "wedding": "a wedding chapel", "tokyo-tower": "a tower",
    "statue-of-liberty": "the statue of liberty", "japanese-castle": "a japanese castle",
    "kaaba": None, "shinto-shrine": "a shrine", "foggy": None,
    "night-with-stars": "a night sky with stars", "cityscape": "a city",
    "sunrise-over-mountains": "the sun rising over mountains",
    "sunrise": "the sun rising over the sea", "cityscape-at-dusk": "a city at dusk",
    "sunset": "a sunset over a city", "bridge-at-night": "a bridge at night",
    "hot-springs": "a hot spring", "playground-slide": "a slide", "stadium": "a stadium",
    # vehicles and the road
    "railway-car": "a railway carriage", "metro": "a subway train",
    "light-rail": "a light rail train", "station": "a train at a station",
    "mountain-railway": "a mountain railway", "oncoming-bus": "a bus",
    "oncoming-police-car": "a police car", "oncoming-taxi": "a taxi", "automobile": "a car",
    "oncoming-automobile": "a car", "sport-utility-vehicle": "a car",
    "articulated-lorry": "a lorry", "manual-wheelchair": "a wheelchair",
    "motorized-wheelchair": "an electric wheelchair", "kick-scooter": "a scooter",
    "motorway": "a motorway", "police-car-light": "a police light",
    "horizontal-traffic-light": "a traffic light", "vertical-traffic-light": "a traffic light",
    "construction": "a construction sign", "ring-buoy": "a life buoy",
    "passenger-ship": "a cruise ship", "airplane-departure": "an airplane taking off",
    "airplane-arrival": "an airplane landing", "seat": "a seat",
    "suspension-railway": None, "mountain-cableway": "a cable car",
    "aerial-tramway": "a cable car", "bellhop-bell": "a service bell", "luggage": "a suitcase",
    # time: the clock faces showing a time are dropped by rule
    "hourglass-done": "an hourglass", "hourglass-not-done": "an hourglass",
    "timer-clock": "a timer", "mantelpiece-clock": "a clock",
    # sky and weather
    "new-moon": None, "waxing-crescent-moon": None, "first-quarter-moon": None,
    "waxing-gibbous-moon": None, "waning-gibbous-moon": None, "last-quarter-moon": None,
    "waning-crescent-moon": None, "full-moon": "a full moon", "sun": "the sun",
    "ringed-planet": "a planet with rings", "glowing-star": "a shining star",
    "milky-way": None, "sun-behind-cloud": "the sun behind a cloud",
    "sun-behind-small-cloud": "the sun behind a cloud",
    "sun-behind-large-cloud": "the sun behind a cloud",
    "sun-behind-rain-cloud": "the sun behind a rain cloud",
    "cloud-with-lightning-and-rain": "a storm cloud", "cloud-with-rain": "a rain cloud",
    "cloud-with-snow": "a snow cloud", "cloud-with-lightning": "a cloud with lightning",
    "fog": None, "cyclone": None, "closed-umbrella": "a closed umbrella",
    "umbrella-with-rain-drops": "an umbrella in the rain",
    "umbrella-on-ground": "an umbrella on the ground", "high-voltage": "a lightning bolt",
    "snowman-without-snow": "a snowman", "fire": "a fire", "droplet": "a drop of water",
    "water-wave": "a wave",
    # events, awards, sport, games
    "fireworks": "fireworks", "sparkles": None, "party-popper": "a party popper",
    "tanabata-tree": None, "rhinoceros": "a rhinoceros", "garlic": "a bulb of garlic",
    "broccoli": "broccoli", "coral": "a piece of coral", "pine-decoration": None, "japanese-dolls": None,
    "moon-viewing-ceremony": None, "red-envelope": "a red envelope", "ribbon": "a ribbon bow",
    "wrapped-gift": "a wrapped present", "reminder-ribbon": "a ribbon",
    "admission-tickets": "two tickets", "military-medal": "a medal", "sports-medal": "a medal",
    "1st-place-medal": "a gold medal", "2nd-place-medal": "a silver medal",
    "3rd-place-medal": "a bronze medal", "baseball": "a baseball",
    "american-football": "an american football", "rugby-football": "a rugby ball",
    "tennis": "a tennis racket and ball", "flying-disc": "a frisbee",
    "bowling": "a bowling ball and pins", "cricket-game": "a cricket bat and ball",
    "field-hockey": "a hockey stick and ball", "ice-hockey": "an ice hockey stick and puck",
    "lacrosse": "a lacrosse stick", "ping-pong": "a ping pong paddle",
    "badminton": "a badminton racket and shuttlecock", "flag-in-hole": "a golf flag",
    "fishing-pole": "a fishing rod", "running-shirt": "a running shirt",
    "skis": "a pair of skis", "bullseye": "a dartboard", "pool-8-ball": "a pool ball",
    "video-game": "a game controller", "game-die": "a die", "mirror-ball": "a disco ball",
    "nesting-dolls": "a nesting doll", "spade-suit": None, "heart-suit": None,
    "diamond-suit": None, "club-suit": None, "joker": "a joker card",
    "mahjong-red-dragon": None, "flower-playing-cards": None, "performing-arts": "two masks",
    "artist-palette": "a paint palette", "thread": "a spool of thread",
    "yarn": "a ball of yarn",
    # clothing
    "glasses": "a pair of glasses", "sunglasses": "a pair of sunglasses",
    "goggles": "a pair of goggles", "necktie": "a tie", "jeans": "a pair of jeans",
    "gloves": "a pair of gloves", "socks": "a pair of socks",
    "one-piece-swimsuit": "a swimsuit", "briefs": "a pair of briefs",
    "shorts": "a pair of shorts", "womans-clothes": "a blouse", "folding-hand-fan": "a fan",
    "shopping-bags": "shopping bags", "thong-sandal": "a flip-flop", "mans-shoe": "a shoe",
    "womans-sandal": "a sandal", "ballet-shoes": "a pair of ballet shoes",
    "womans-boot": "a boot", "hair-pick": "a comb", "womans-hat": "a hat",
    "billed-cap": "a cap", "military-helmet": "a helmet", "rescue-workers-helmet": "a helmet",
    "prayer-beads": None, "gem-stone": "a gem",
    # sound, music, phones, computers
    "muted-speaker": None, "speaker-low-volume": None, "speaker-medium-volume": None,
    "speaker-high-volume": None, "bell-with-slash": None, "postal-horn": "a horn",
    "musical-score": None, "musical-note": None, "musical-notes": None,
    "studio-microphone": "a microphone", "level-slider": None, "control-knobs": None,
    "headphone": "a pair of headphones", "musical-keyboard": "a piano keyboard",
    "long-drum": "a drum", "mobile-phone-with-arrow": None, "telephone-receiver": "a phone",
    "mobile-phone": "a mobile phone", "low-battery": None, "electric-plug": "a plug",
    "desktop-computer": "a computer", "computer-disk": "a disk",
    "optical-disk": "a cd", "dvd": None,
    # light, video, paper
    "film-frames": "a film strip", "camera-with-flash": "a camera",
    "magnifying-glass-tilted-left": "a magnifying glass",
    "magnifying-glass-tilted-right": "a magnifying glass", "red-paper-lantern": "a red lantern",
    "diya-lamp": "an oil lamp", "notebook-with-decorative-cover": "a notebook",
    "closed-book": "a book", "books": "a stack of books", "ledger": "a notebook",
    "page-with-curl": "a sheet of paper", "page-facing-up": "a sheet of paper",
    "bookmark-tabs": None, "label": "a tag", "money-bag": "a bag of money",
    "yen-banknote": "a banknote", "dollar-banknote": "a banknote",
    "euro-banknote": "a banknote", "pound-banknote": "a banknote", "money-with-wings": None,
    "chart-increasing-with-yen": None, "e-mail": None, "incoming-envelope": None,
    "envelope-with-arrow": None, "outbox-tray": None, "inbox-tray": None,
    "package": "a parcel", "closed-mailbox-with-raised-flag": "a mailbox",
    "closed-mailbox-with-lowered-flag": "a mailbox",
    "open-mailbox-with-raised-flag": "a mailbox",
    "open-mailbox-with-lowered-flag": "a mailbox", "ballot-box-with-ballot": "a ballot box",
    "black-nib": "a pen nib", "memo": None,
    # office, locks, tools
    "file-folder": "a folder", "open-file-folder": "an open folder",
    "card-index-dividers": None, "tear-off-calendar": "a calendar",
    "spiral-notepad": "a notepad", "spiral-calendar": "a calendar", "card-index": None,
    "chart-increasing": None, "chart-decreasing": None, "bar-chart": None,
    "round-pushpin": "a pin", "linked-paperclips": "two paperclips",
    "straight-ruler": "a ruler", "triangular-ruler": "a set square",
    "scissors": "a pair of scissors", "card-file-box": None,
    "file-cabinet": "a filing cabinet", "locked": "a padlock", "unlocked": "an open padlock",
    "locked-with-pen": None, "locked-with-key": "a padlock and a key", "pick": "a pickaxe",
    "hammer-and-pick": None, "hammer-and-wrench": "a hammer and a wrench",
    "crossed-swords": "two swords", "bow-and-arrow": "a bow and arrow",
    "carpentry-saw": "a saw", "nut-and-bolt": "a nut and a bolt",
    "balance-scale": "a pair of scales", "link": "a chain link", "broken-chain": None,
    "chains": "a chain", "alembic": None, "dna": None, "satellite-antenna": "a satellite dish",
    "drop-of-blood": "a drop of blood", "adhesive-bandage": "a plaster", "x-ray": None,
    # household and the rest
    "couch-and-lamp": "a sofa and a lamp", "mouse-trap": "a mousetrap",
    "lotion-bottle": "a bottle of lotion", "roll-of-paper": "a roll of toilet paper",
    "soap": "a bar of soap", "bubbles": "soap bubbles", "cigarette": None,
    "headstone": "a gravestone", "funeral-urn": "an urn", "nazar-amulet": None,
    "hamsa": None, "moai": "a stone head", "placard": "a sign",
    "identification-card": "an id card",
}

# Animal emoji drawn as a head: "dog face" is a dog to anyone naming the picture.
_FACE_SUFFIX_SUBCATEGORIES = ("animal-", )


def _plural(word: str) -> bool:
    return word.endswith("s") and not word.endswith(("ss", "us", "is", "ys"))


def caption_for(name: str, subcategory: str, unicode_name: str = "") -> str | None:
    """The caption for an emoji's CLDR short name, or None when the emoji is left out.

    Args:
        name: the CLDR short name as the Iconify sets key it (``"red-apple"``).
        subcategory: the emoji's subcategory in ``emoji.json`` (``"food-fruit"``).
        unicode_name: the emoji's Unicode name (``"JACK-O-LANTERN"``), whose hyphenated
            words are put back ("a jack-o-lantern", "a t-shirt", "a yo-yo").

    Returns:
        A lower-case noun phrase with its article ("a red apple", "an owl", "cherries").
    """
    from .caption_faults import fix_article

    cap = _caption_words(name, subcategory)
    if cap is None:
        return None
    for word in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)+", unicode_name.lower()):
        cap = re.sub(rf"\b{re.escape(word.replace('-', ' '))}\b", word, cap)
    return fix_article(cap)


def _caption_words(name: str, subcategory: str) -> str | None:
    if subcategory not in KEPT_SUBCATEGORIES:
        return None
    if name in CAPTION_OVERRIDES:
        return CAPTION_OVERRIDES[name]
    if subcategory == "time" and re.search(r"-(oclock|thirty)$", name):
        return None
    if "face" in name.split("-") and not subcategory.startswith(_FACE_SUFFIX_SUBCATEGORIES):
        return None
    words = name.replace("-face", "").split("-") if subcategory.startswith(
        _FACE_SUFFIX_SUBCATEGORIES) else name.split("-")
    phrase = " ".join(words)
    return phrase if _plural(words[-1]) else "a " + phrase


def head_noun(caption: str) -> str | None:
    """The head noun of an emoji caption: "a boxing glove" -> glove, "a chick hatching from
    an egg" -> chick, "a pair of scissors" -> pair (as the app reads "a bunch of grapes").

    The app's own rule, :func:`apps.captioning.data.head_noun` (an "-ing" word ends the
    noun phrase only when it follows a noun and is not itself a noun: "a shooting star",
    "a dumpling" and "a hot spring" keep their nouns).

    Args:
        caption: the caption.
    """
    from .data import head_noun as rule

    return rule(caption)


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EmojiRecord:
    """One artist's drawing of one emoji, with its caption and licence.

    Attributes:
        name: the CLDR short name (``"red-apple"``).
        caption: the caption ("a red apple").
        head_noun: its head noun (:func:`head_noun`).
        art_set: the artist's set (``"noto"``, ``"twemoji"``, ``"openmoji"``, ``"fluent"``).
        source: where the drawing came from (``npm:@iconify-json/noto@1.2.9#red-apple``).
        licence: SPDX identifier of the drawing's licence.
        attribution: the credit line the licence asks for.
        png: path of the cached RGBA PNG.
        unified: the emoji's code points (``"1F34E"``).
        category: its ``emoji.json`` category and subcategory (``"Food & Drink/food-fruit"``).
    """

    name: str
    caption: str
    head_noun: str
    art_set: str
    source: str
    licence: str
    attribution: str
    png: str
    unified: str
    category: str

    def rgba(self) -> np.ndarray:
        """The drawing as a uint8 RGBA array."""
        from PIL import Image

        with Image.open(self.png) as im:
            return np.asarray(im.convert("RGBA")).copy()

    def png_bytes(self) -> bytes:
        """The cached PNG file's bytes."""
        return Path(self.png).read_bytes()

    def to_stamp(self):
        """This drawing as a :class:`apps.captioning.data.Stamp` (id ``emoji/<set>/<name>``),
        so the stamp compositing and scene code take it unchanged."""
        from .data import Stamp

        return Stamp(f"emoji/{self.art_set}/{self.name}", self.png, self.caption,
                     self.head_noun)


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    unified: str
    category: str
    subcategory: str
    image: str  # emoji-datasource's PNG file name
    unicode_name: str  # "JACK-O-LANTERN": keeps the hyphens the CLDR key lost


def emoji_catalogue() -> list[_Entry]:
    """Every emoji of ``emoji.json`` with its CLDR short name, in the data's sort order."""
    meta = npm_tarball(METADATA_PACKAGE)
    entries = json.loads(read_tarball_members(meta, {"package/emoji.json"})
                         ["package/emoji.json"])
    names_set = ART_SETS[_NAME_SOURCE]
    chars = json.loads(read_tarball_members(npm_tarball(names_set.package),
                                            {"package/chars.json"})["package/chars.json"])
    out = []
    for e in sorted(entries, key=lambda e: e["sort_order"]):
        u = e["unified"].lower()
        name = chars.get(u) or chars.get(u.replace("-fe0f", ""))
        if name is None:
            # No CLDR key: fall back to the Unicode name, slugged the same way.
            name = re.sub(r"[^a-z0-9]+", "-", e["name"].lower()).strip("-")
        out.append(_Entry(name, e["unified"], e["category"], e["subcategory"], e["image"],
                          e["name"]))
    return out


def _iconify_svg(icons: dict, name: str) -> str | None:
    """A standalone SVG document for one Iconify icon (following plain aliases), or None."""
    aliases = icons.get("aliases", {})
    seen = 0
    while name not in icons["icons"] and name in aliases and seen < 5:
        alias = aliases[name]
        if set(alias) - {"parent"}:
            return None  # a transformed alias (flipped, rotated): not the artist's drawing
        name, seen = alias["parent"], seen + 1
    icon = icons["icons"].get(name)
    if icon is None:
        return None
    w = icon.get("width", icons.get("width", 16))
    h = icon.get("height", icons.get("height", 16))
    left, top = icon.get("left", 0), icon.get("top", 0)
    return ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
            f' viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{icon["body"]}</svg>')


def render_svg(svg: str, size: int) -> bytes:
    """Renders an SVG document to a ``size`` x ``size`` RGBA PNG (resvg, no system library).

    Args:
        svg: the SVG document.
        size: the output side in pixels.

    Raises:
        ValueError: the SVG cannot be parsed or rendered.
    """
    import resvg_py

    return bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size))


def _attribution(art: ArtSet, name: str) -> str:
    return (f"{name} from {art.author}'s emoji ({art.homepage}), {art.licence}; "
            f"npm {art.package.spec}")


def _folder_for(art: ArtSet, size: int) -> Path:
    from rnnkit.paths import cache_dir

    tag = f"{size}px" if art.kind == "iconify" else "64px"
    return cache_dir() / "emoji" / f"{art.package.filename[:-4]}-{tag}"


def _render_set(art: ArtSet, wanted: Sequence[_Entry], size: int) -> Path:
    """Writes (once, cached) one PNG per wanted emoji the set has; returns the folder."""
    from rnnkit.atomic import atomic_directory

    folder = _folder_for(art, size)
    done = folder / "index.json"
    with cache_lock(f"emoji-{folder.name}"):
        if done.exists() and set(json.loads(done.read_text())["requested"]) >= {
                e.name for e in wanted}:
            return folder
        tarball = npm_tarball(art.package)
        with atomic_directory(folder, overwrite=True) as tmp:
            have: dict[str, str] = {}
            if art.kind == "iconify":
                icons = json.loads(read_tarball_members(tarball, {"package/icons.json"})
                                   ["package/icons.json"])
                for e in wanted:
                    svg = _iconify_svg(icons, e.name)
                    if svg is None:
                        continue
                    (tmp / f"{e.name}.png").write_bytes(render_svg(svg, size))
                    have[e.name] = f"npm:{art.package.spec}#{e.name}"
            else:
                prefix = f"package/img/{art.png_folder}/64/"
                pngs = read_tarball_members(tarball, {prefix + e.image for e in wanted},
                                            missing_ok=True)
                for e in wanted:
                    data = pngs.get(prefix + e.image)
                    if data is None:
                        continue
                    (tmp / f"{e.name}.png").write_bytes(data)
                    have[e.name] = f"npm:{art.package.spec}#img/{art.png_folder}/64/{e.image}"
            (tmp / "index.json").write_text(json.dumps(
                {"requested": sorted(e.name for e in wanted), "sources": have}, indent=1))
    return folder


def emoji_records(sets: Sequence[str] = DEFAULT_SETS, size: int = 224) -> list[EmojiRecord]:
    """Captioned drawings of concrete things from emoji art sets, fetched and rendered once.

    Args:
        sets: keys of :data:`ART_SETS`.
        size: side in pixels of the rendered SVG drawings (the PNG sets are always 64).

    Returns:
        One record per (art set, kept emoji the set has drawn), ordered by art set, then
        by the emoji's order in ``emoji.json``. Several emoji may share a caption (three
        globes are "a globe").

    Raises:
        ValueError: for an unknown set name or a size below 16.
        FetchError: when a package cannot be fetched or fails its hash check.
    """
    unknown = [s for s in sets if s not in ART_SETS]
    if unknown:
        raise ValueError(f"unknown emoji art set(s) {unknown}; choose from "
                         f"{', '.join(ART_SETS)}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    kept = []
    for e in emoji_catalogue():
        cap = caption_for(e.name, e.subcategory, e.unicode_name)
        if cap is not None:
            kept.append((e, cap))
    records: list[EmojiRecord] = []
    for key in sets:
        art = ART_SETS[key]
        folder = _render_set(art, [e for e, _ in kept], size)
        sources = json.loads((folder / "index.json").read_text())["sources"]
        for e, cap in kept:
            if e.name not in sources:
                continue
            head = head_noun(cap)
            if head is None:
                raise ValueError(f"caption {cap!r} of {e.name} has no head noun")
            records.append(EmojiRecord(
                name=e.name, caption=cap, head_noun=head, art_set=art.art_set,
                source=sources[e.name], licence=art.licence,
                attribution=_attribution(art, e.name), png=str(folder / f"{e.name}.png"),
                unified=e.unified, category=f"{e.category}/{e.subcategory}"))
    return records


def art_set_split(records: Sequence[EmojiRecord], held_out: str
                  ) -> tuple[list[EmojiRecord], list[EmojiRecord]]:
    """Holds one artist out: (training records of the other sets, test records of that one).

    Test records whose caption no other set has drawn are left out, so the test asks for
    a known thing in a new artist's hand, as the Tux Paint held-out singles do.

    Args:
        records: from :func:`emoji_records`.
        held_out: an ``art_set`` value (``"noto"``, ``"twemoji"``, ``"openmoji"``,
            ``"fluent"``).

    Raises:
        ValueError: when no record belongs to ``held_out``.
    """
    train = [r for r in records if r.art_set != held_out]
    known = {r.caption for r in train}
    test = [r for r in records if r.art_set == held_out and r.caption in known]
    if not any(r.art_set == held_out for r in records):
        sets = sorted({r.art_set for r in records})
        raise ValueError(f"no records of art set {held_out!r}; the records hold {sets}")
    return train, test


def png_bytes_to_rgba(data: bytes) -> np.ndarray:
    """Decodes PNG bytes to a uint8 RGBA array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA")).copy()
