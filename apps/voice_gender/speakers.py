"""Who speaks in the real voice sources, and the document that says so.

Every real speaker the voice app trains or evaluates on is a row of :data:`SPEAKERS`. The
sex in a row comes from a document only: a package's credits or handbook, a project's
history, or a game's own dialogue text (a pronoun, or a Spanish article that agrees with the
character). Never from pitch: pitch is what the model listens to, so a pitch-derived label
would grade the model against itself. Where a credit names a person and not the sex, the sex
is read from the credited given name (Eva, Robert, ...); the row says so.

Sets left out (children, synthetic voices, credits that do not settle whose voice a set is)
are rows of :data:`EXCLUDED` with the reason, so the choice is visible and reviewable.

``group`` is the unit of the speaker-disjoint folds (:mod:`apps.voice_gender.folds`):
speakers who may share a voice share a group. A game cast with no published cast list is
one group, because one actor may voice several characters.
"""

from __future__ import annotations

from dataclasses import dataclass

SEXES = ("female", "male")

# Never read for training, tuning or evaluation: independent test sets (../shared/DATA.md).
RESERVED_PACKAGE_PREFIXES = ("asterisk-",)
RESERVED_PACKAGES = ("codec2-examples",)

KLETTRES_HANDBOOK = "klettres-data: usr/share/doc/HTML/en/klettres/index.docbook"
KLETTRES_GIT = "KDE klettres git history (github.com/KDE/klettres)"
DRASCULA_TEXT = ("drascula: usr/share/scummvm/drascula/en/drascula.dat "
                 "(the game's text, all languages)")
DRASCULA_TALK = "ScummVM engines/drascula/talk.cpp (file prefix of each talk_* function)"
QUEEN_DATA = "flight-of-the-amazon-queen: queen.1c"
QUEEN_TALK = ("ScummVM engines/queen/talk.cpp (a dialogue file's lines play "
              "'<talkKey><id>P<n>' for the person talked to and '...J<n>' for Joe)")


SKY_DATA = "beneath-a-steel-sky: usr/share/scummvm/beneath-a-steel-sky"
SKY_CURSOR = (f"{SKY_DATA}/sky.cpt (a compact's cursor text, field 9: the label the game shows "
              "under the pointer) and sky.dsk (text n is in text file 60600 + (n >> 12))")
SKY_SPEAK = ("ScummVM engines/sky/logic.cpp (fnSpeakMe/fnSpeakWait: the first argument is the "
             "compact that speaks; fnSpeakMeDir 'must be player')")

@dataclass(frozen=True)
class Speaker:
    """One documented real speaker.

    Attributes:
        id: the speaker id used everywhere (folds, metrics, the provenance table).
        source: the reader in :mod:`apps.voice_gender.sources` that yields the clips.
        package: the Debian package the audio comes from.
        language: ISO 639 code of what is spoken.
        sex: ``female`` or ``male``.
        document: the exact document, line or quotation that names the speaker and sex.
        group: the fold unit; speakers who may share a voice share a group.
        note: caveats a reviewer should know.
    """

    id: str
    source: str
    package: str
    language: str
    sex: str
    document: str
    group: str
    note: str = ""


@dataclass(frozen=True)
class Excluded:
    """A voice set left out, and why.

    Attributes:
        key: the set (``<source>-<language or character>``).
        package: its Debian package.
        reason: what the documents say (or fail to say).
    """

    key: str
    package: str
    reason: str


def _klettres(lang: str, sex: str, document: str, note: str = "") -> Speaker:
    sid = f"klettres-{lang}"
    return Speaker(sid, "klettres", "klettres-data", lang.split("_")[0], sex, document, sid, note)


def _drascula(cast: str, character: str, sex: str, document: str, note: str = "") -> Speaker:
    package = "drascula" if cast == "en" else "drascula-spanish"
    return Speaker(f"drascula-{cast}-{character}", "drascula", package, cast, sex, document,
                   f"drascula-{cast}", note)


FILLETS_SCRIPT = "fillets-ng-data: usr/share/games/fillets-ng/script"
_FILLETS_SMALL = (f"{FILLETS_SCRIPT}/bathroom/dialogs_cs.lua lines 50-51: the small fish "
                  "(file code 'm') says 'Viděla jsem tu hodně zbytečností' (Czech feminine "
                  "past tense; 16 such first-person forms in her Czech lines, no masculine one)")
_FILLETS_BIG = (f"{FILLETS_SCRIPT}/cave/dialogs_cs.lua lines 26-27: the big fish (file code 'v') "
                "says 'Myslel jsem, že je to jen kámen' (Czech masculine past tense; 12 such "
                "first-person forms in his Czech lines, no feminine one)")
_FILLETS_NOTE = ("file codes from ../shared/DATA.md; the Dutch actors voice the same two fish; "
                 "the dialogue scripts are in the package fillets-ng-data, which the reader does "
                 "not need")

_CAST_NOTE = ("no cast list ships with the game, and one actor may voice several characters: "
              "the whole cast is one fold group")

_DRASCULA_CHARACTERS = (
    # (character, file prefix, sex, document)
    ("hacker", "", "male",
     (f"{DRASCULA_TALK}: talk() plays '<n>.als' with _text (John Hacker, the player); "
     f"{DRASCULA_TEXT}: his Spanish line 'ESTOY PREPARADO PARA ENFRENTARME A SU PRUEBA' "
     "(masculine 'preparado'); B.J.: 'OH JOHNNY, HONEY, THANK GOD YOU'RE HERE'")),
    ("bj", "BJ", "female",
     (f"{DRASCULA_TALK}: talk_bj/talk_bj_bed play 'BJ<n>.als' with _textbj; "
     f"{DRASCULA_TEXT}: 'B.J. IS IN THERE... SHE IS A REALLY HOT CHICK!', "
     "'WHY DID YOU TAKE MY ONLY LOVE, B.J., AWAY FROM ME?. LIFE HAS NO MEANING FOR ME "
     "WITHOUT HER'")),
    ("d", "D", "male",
     (f"{DRASCULA_TALK}: 'd<n>.als' is Drascula (talk_drascula), and also the blind man "
     "(talk_blind, from TEXTD_START = 68) and a few lines of John (talk_hacker, talk_trunk); "
     f"{DRASCULA_TEXT}: 'YOU HAVE TO BE EXTRA CAREFUL WITH DRASCULA, HIS FRISISNOTIC POWERS HAVE "
     "MADE OF HIM THE MOST POWERFUL VAMPIRE', 'YO SOY EL MALO Y SOY TODO LO MACHISTA QUE QUIERA', "
     "'IT'S A BLIND MAN WHO CAN'T SEE'")),
    ("igor", "I", "male",
     (f"{DRASCULA_TALK}: talk_igor plays 'I<n>.als'; {DRASCULA_TEXT}: 'IGOR LISTEN CAREFULLY MAN, "
     "WE ARE GOING TO START WITH PHASE NUMBER ONE OF MY PLAN TO CONQUER THE WORLD'")),
    ("vonbraun", "VB", "male",
     (f"{DRASCULA_TALK}: talk_vonBraun plays 'VB<n>.als'; {DRASCULA_TEXT}: 'JOHN HACKER? SOY EL "
     "DOCTOR VON BRAUN', 'WHO IS THIS GUY NAMED VON BRAUN?'")),
    ("pianist", "P", "male",
     (f"{DRASCULA_TALK}: talk_pianist plays 'P<n>.als'; {DRASCULA_TEXT}: 'EL PIANISTA NO ESTA', "
     "'QUE HA PASADO CON EL PIANISTA?' (masculine article)")),
    ("drunk", "B", "male",
     (f"{DRASCULA_TALK}: talk_drunk plays 'B<n>.als'; {DRASCULA_TEXT}: 'YO ERA EL BORRACHO DEL "
     "PUEBLO' (masculine article)")),
    ("bartender", "T", "male",
     (f"{DRASCULA_TALK}: talk_bartender plays 'T<n>.als'; {DRASCULA_TEXT}: 'EL TABERNERO NO COMPRA "
     "MAS PARTITURAS' (masculine article)")),
    ("werewolf", "L", "male",
     (f"{DRASCULA_TALK}: talk_werewolf plays 'L<n>.als'; {DRASCULA_TEXT}: 'AHHH, UN HOMBRE LOBO!' "
     "(hombre lobo: wolf man)")),
)

# Flight of the Amazon Queen: (character, dialogue files whose person lines are theirs, sex,
# document). Joe's lines are every dialogue's J lines plus the JOE*.SB descriptions.
_QUEEN_CHARACTERS = (
    ("joe", (), "male",
     (f"{QUEEN_TALK}; Joe's own line in {QUEEN_DATA} C18A.CUT 'Just because I'm a guy?'; "
     "FRANK.DOG 'The answer is quite simple Mr. King.'")),
    ("faye", ("FAYE2.DOG", "FAYE3.DOG", "FAYE4.DOG", "FAYE5.DOG", "FAYE6.DOG"), "female",
     (f"{QUEEN_DATA} C70D.CUT 'I will fly Faye to the Amazon for her photo shoot'; SPARKY3.DOG "
     "'Where's Faye?! I told you to look after her!'")),
    ("azura", ("PRIN1.DOG", "PRIN2.DOG", "PRIN4.DOG"), "female",
     (f"{QUEEN_DATA} PRIN2.DOG (Joe) 'Don't worry Azura, I'll get us out of this mess.'; "
     "BOB5.DOG 'But Princess Azura may die if we don't help her.'")),
    ("naomi", ("NAOMI.DOG", "NAOMI2.DOG"), "female",
     (f"{QUEEN_DATA} C21P.CUT 'Naomi likes flowers and all, but she's allergic to that "
     "particular type.'")),
    ("lola", ("LOLA1.DOG",), "female",
     (f"{QUEEN_DATA} LARIS.DOG 'That key belongs to Miss Lola and she doesn't like strangers "
     "dropping in on her.'")),
    ("marylou", ("TAM1.DOG", "TAM2.DOG", "TAM3.DOG", "TAM4.DOG"), "female",
     (f"{QUEEN_DATA} TAM1.DOG (her own line) 'Howdy Joe, I'm Mary-Lou Cook. My husband Jimmy "
     "and I run this mission.'; TAM4.DOG (Joe) 'Hello Mary-Lou.'")),
    ("frank", ("FRANK.DOG",), "male",
     (f"{QUEEN_DATA} C69G.CUT 'With Frank gone, the world is a much safer place. If only he'd "
     "used his powers for niceness'")),
    ("sparky", tuple(f"SPARKY{i}.DOG" for i in range(1, 9)), "male",
     (f"{QUEEN_DATA} C3G.CUT (his reply) 'I'm a grown man Joe, so treat me like one!'; C69A.CUT "
     "'Joe, what have you done to Sparky?! ... I think I just turned him into a dinosaur'")),
    ("chief", ("CHIEF1.DOG", "CHIEF2.DOG", "CHIEF3.DOG", "CHIEF4.DOG"), "male",
     (f"{QUEEN_DATA} BOB3.DOG 'The Chief's our local expert, try asking him.'; BOB1.DOG 'She "
     "lives in a house with her dad the chief.'")),
)
# Dialogue file -> character, for the reader.
QUEEN_DIALOGUES = {dog: character for character, dogs, _, _ in _QUEEN_CHARACTERS for dog in dogs}

# File prefix -> character, for the reader. "E" (talk_mus), "F" and "S" (sound effects) are
# not here: see EXCLUDED.
DRASCULA_PREFIXES = {prefix: character for character, prefix, _, _ in _DRASCULA_CHARACTERS}

# Beneath a Steel Sky (CD 0.0372): (character, compacts of sky.cpt that speak as them, sex,
# document). Text numbers are the game's (sky.dsk text files 60600-60607); the reader attributes
# a speech line to the compact the game's scripts make say it (see sources/steel_sky.py).
_SKY_CHARACTERS = (
    ("foster", ("foster",), "male",
     (f"{SKY_SPEAK}: the player, Robert Foster; {SKY_DATA}/sky.dsk text 20482 'I CONCUR with "
      "your OBSERVATION, Mr Foster.', text 20983 'I've found my DESTINY, Mr Foster!'")),
    ("danielle", ("danielle",), "female",
     (f"{SKY_CURSOR}: compact 'danielle' is labelled text 54 'Woman'; her own lines 16387 "
      "'I'm Mrs Piermont...' and 16388 '...but YOU can call me DANIELLE.'; text 16758 'Professor "
      "PIERMONT'S widow!'")),
    ("babs", ("sc36_babs",), "female",
     (f"{SKY_CURSOR}: compact 'sc36_babs' is labelled text 54 'Woman'; her own line 17157 'Well, "
      "hello YOURSELF. They call ME Babs.'; text 17153 'Why is she called `BOUNCING' Babs?'")),
    ("anita", ("anita",), "female",
     (f"{SKY_CURSOR}: compact 'anita' is labelled text 54 'Woman'; her own line 8690 'I wish you "
      "wouldn't CALL me that! My name is ANITA!'; text 13153 'Do you know a girl called ANITA?'")),
    ("hobbins", ("jobsworth", "sc42_jobsworth", "sc82_jobsworth"), "male",
     (f"{SKY_CURSOR}: compact 'jobsworth' is labelled text 4 'Man'; text 17347 'Hobbins is a "
      "CRUEL and CALLOUS man...'; in court 17058 'Howard HOBBINS... COME ON UP!' before "
      "sc42_jobsworth's 17065 'I've bin FRAMED, yer 'Onour.'; sc82_jobsworth speaks in script "
      "HOBS_END (ScummVM skydefs.h)")),
    ("judge", ("sc42_judge",), "male",
     (f"{SKY_DATA}/sky.dsk text 298 'Judge Chutney, the man behind the new...'; sc42_judge speaks "
      "the lines of CHUTNEY_SPEECH (ScummVM logic.cpp forward list); the prosecution addresses "
      "him 'OBJECTION, m'Lord!' (16572)")),
    ("greaves", ("sc42_prosecution",), "male",
     (f"{SKY_DATA}/sky.dsk: the prosecution's 'OBJECTION, m'Lord!' (16572, 17002) is answered by "
      "the judge's 17482 'Objection OVERRULED, Mr Greaves.'; the clerk's 16564 'That's Mr "
      "GREAVES, m'Lord...'")),
    ("henri", ("sc30_henri",), "male",
     (f"{SKY_CURSOR}: compact 'sc30_henri' is labelled text 16615 'Doorman'; he speaks the lines "
      "of HENRI_SPEECH (ScummVM logic.cpp forward list)")),
    ("colston", ("sc36_colston",), "male",
     (f"{SKY_CURSOR}: compact 'sc36_colston' is labelled text 4 'Man'; text 17025 'Is that Mr "
      "Colston? Danielle Piermont here...'")),
    ("blunt", ("sc31_guard",), "male",
     (f"{SKY_DATA}/sky.dsk text 17486 'But Officer Blunt said it BIT him!'; compact 'sc31_guard' "
      "speaks the lines of BLUNT_SPEECH (ScummVM logic.cpp forward list; compact.cpp 'Officer "
      "Blunt' workaround on the sc31 guard)")),
    ("eddie", ("sc32_gardener",), "male",
     (f"{SKY_DATA}/sky.dsk text 16495 'He's MAD. And he's not a REAL gardener...'; compact "
      "'sc32_gardener' (cursor text 16616 'Gardener') speaks the lines of EDDIE_SPEECH")),
    ("gallagher", ("sc36_gallagher", "gallager_bel"), "male",
     (f"{SKY_CURSOR}: compact 'sc36_gallagher' is labelled text 4 'Man'; text 368 'A guy called "
      "GALLAGHER.'; the Belle Vue compact 'gallager_bel', also labelled text 4 'Man', speaks "
      "the lines of GALL_BELLEVUE (ScummVM skydefs.h) and names himself: 13110 'I'm "
      "Gallagher.'")),
    ("barry", ("sc36_barman",), "male",
     (f"{SKY_DATA}/sky.dsk text 17150 'Don't blame BARRY - he's only doing his JOB.'; compact "
      "'sc36_barman' (cursor text 16619 'Barman') speaks the lines of BARRY_SPEECH")),
    ("walter", ("witness",), "male",
     (f"{SKY_CURSOR}: compact 'witness' is labelled text 4 'Man'; his own lines 20701 'I am "
      "known as WALTER...'; he speaks the lines of WALTER_SPEECH")),
    ("lobby_dad", ("dad",), "male",
     f"{SKY_CURSOR}: compact 'dad' (a lobby guard) is labelled text 4 'Man'"),
    ("lobby_son", ("son",), "male",
     (f"{SKY_CURSOR}: compact 'son' (the other lobby guard, an adult: 8994 'What kind of "
      "inspection, Norville?') is labelled text 4 'Man'")),
    ("radman", ("radman",), "male",
     f"{SKY_CURSOR}: compact 'radman' is labelled text 4 'Man'"),
    ("foreman", ("foreman",), "male",
     f"{SKY_CURSOR}: compact 'foreman' is labelled text 4 'Man'"),
    ("anchor", ("anchor",), "male",
     f"{SKY_CURSOR}: compact 'anchor' is labelled text 4 'Man'"),
    ("lamb", ("lamb",), "male",
     (f"{SKY_CURSOR}: compact 'lamb' is labelled text 4 'Man'; Anchor on him: 12413 'Lamb? "
      "He's a SLIMEBALL!', 12414 'I can't BEAR the man.'; text 4285 'Who does that Lamb think "
      "he is...?'; lamb speaks the lines of LAMB_FACTORY and LAMB_BELLEVUE (ScummVM skydefs.h; "
      "debug.cpp names their forward variables 'safe_lamb_speech' and 'safe_lamb_bell')")),
    ("burke", ("burke",), "male",
     (f"{SKY_CURSOR}: compact 'burke' is labelled text 12694 'Burke'; Anchor, asked 12431 "
      "'Would you recommend Doctor Burke?', answers 12432 'He's known as the GHOUL...' and "
      "12433 '...and his SPECIALITY is FASHION JOBS.'; his own line 12320 'That's my WIFE "
      "you're talking about!' (BURKE_SPEECH)")),
    ("trevor", ("trevor",), "male",
     (f"{SKY_CURSOR}: compact 'trevor' is labelled text 4 'Man'; his own line 12520 "
      "'Welcome to Trevor's Travel Company!'; in TREVOR_SPEECH Foster's 12521 'Show him, Joey. "
      "ANALYSE his BRAIN PATTERNS.' and Joey's 12524 'He's OBSESSED with archaic images of "
      "MASCULINITY...'")),
    ("jason", ("body",), "male",
     (f"{SKY_CURSOR}: compact 'body' (the patient on Burke's table) is labelled text 4 'Man'; "
      "he speaks the lines of JASON_SPEECH (ScummVM skydefs.h; debug.cpp names its forward "
      "variable 'safe_body_speech')")),
    ("mantrach", ("useless_char",), "male",
     (f"{SKY_CURSOR}: compact 'useless_char' is labelled text 4 'Man'; his own line 12564 "
      "'I'm mister COOL...'; he speaks the lines of MANTRACH_SPEECH (ScummVM skydefs.h; "
      "debug.cpp names its forward variable 'safe_uchar_speech')")),
    ("father", ("sc81_father",), "male",
     (f"{SKY_CURSOR}: compact 'sc81_father' is labelled text 20939 'Overmann'; in BORED_ROOM "
      "(debug.cpp names its forward variable 'ref_father_speech') Foster calls him 20960 "
      "'Which IS the monster, Father?' and 20964 'Father? FATHER...!', and he says 20907 "
      "'Is that ROBERT? Oh, my SON!'; Danielle's 16400 'Your Father, Richard, became the "
      "project leader.'")),
)
# Compact (sky.cpt name) -> character, for the reader.
SKY_COMPACTS = {cpt: character for character, cpts, _, _ in _SKY_CHARACTERS for cpt in cpts}
STEEL_SKY_SPEAKERS: tuple[Speaker, ...] = tuple(
    Speaker(f"steel_sky-{character}", "steel_sky", "beneath-a-steel-sky", "en", sex, document,
            "steel_sky", _CAST_NOTE)
    for character, _, sex, document in _SKY_CHARACTERS)

SPEAKERS: tuple[Speaker, ...] = (
    # ---- Fish Fillets NG: one actor per language and fish (the app's original data).
    *(Speaker(f"fillets-{lang}-{sex}", "fillets", f"fillets-ng-data-{lang}", lang, sex,
              doc, f"fillets-{lang}-{sex}", _FILLETS_NOTE)
      for lang in ("cs", "nl")
      for sex, doc in (("female", _FILLETS_SMALL), ("male", _FILLETS_BIG))),
    # ---- KLettres: letters and syllables, one credited recorder per language.
    _klettres("cs", "female",
              f"{KLETTRES_HANDBOOK} line 615 'Czech sounds: Eva Mikulčíková'; the same credit in "
              "the git tree's AUTHORS and in the about-dialog credits removed by commit 511ca7b",
              "sex from the credited given name; git commit 6a336bb (2004) 'new czech sounds, "
              "thanks to Jozef Riha' credits Jozef Říha, who also added silence to short clips "
              "(3a747b4), for supplying them; every credit list names Eva for Czech"),
    _klettres("da", "male",
              f"{KLETTRES_HANDBOOK} line 617 'Danish sounds: Erik Kjaer Pedersen'; git commit "
              "8f04910 'Partially changed to ogg-sounds made by Leif Lende'",
              "sex from the credited given names; both credited men, so the label holds "
              "whichever of them recorded which clip"),
    _klettres("en", "male",
              f"{KLETTRES_HANDBOOK} line 621 'English sounds: Robert Wadley'",
              "sex from the credited given name"),
    _klettres("fr", "male",
              f"{KLETTRES_HANDBOOK} line 623 'French sounds: Ludovic Grossard'; git commits "
              "a6fa328/aee5bbd 'new sound (but still some noise)' by Ludovic Grossard himself",
              "sex from the credited given name"),
    _klettres("he", "male",
              f"{KLETTRES_HANDBOOK} line 627 'Hebrew sounds: Assaf Gorgon'; the about-dialog "
              "credit removed by git commit 511ca7b: 'Assaf Gorgon and Diego Iastrubni'",
              "sex from the credited given names (two men)"),
    _klettres("nds", "male",
              f"{KLETTRES_HANDBOOK} line 633 'Low Saxon sounds: Manfred Wiese and Sönke "
              "Dibbern'; git commit 103a3f8 'thanks to Soenke Dibbern for recording the sounds'",
              "sex from the credited given names (two men)"),
    _klettres("lt", "male",
              "klettres-data: usr/share/klettres/lt/sounds.xml line 15 'Made by Liudas "
              "Ališauskas'",
              "sex from the credited given name"),
    # ---- KTuberling: single words; only a set whose recorder a document names.
    Speaker("ktuberling-de", "ktuberling", "ktuberling-data", "de", "male",
            "KDE ktuberling git tree at commit 63fe5cb (2022-10-17), sounds/de/README: 'A big "
            "thanks goes to Helmut Pozimski <mailinglist@pozimski.eu>, who recorded the files.' "
            "(the package's 72 German files are byte-identical to that commit's)",
            "ktuberling-de", "sex from the credited given name; the README is not in the Debian "
            "package, so the reader checks the files against the documented set"),
    # ---- Drascula: two separate casts (English and Spanish), characters by file prefix.
    *(_drascula(cast, character, sex, document, _CAST_NOTE)
      for cast in ("en", "es") for character, _, sex, document in _DRASCULA_CHARACTERS),
    # ---- Flight of the Amazon Queen (CD version): one cast, no cast list -> one group.
    *(Speaker(f"amazon_queen-{character}", "amazon_queen", "flight-of-the-amazon-queen", "en",
              sex, document, "amazon_queen", _CAST_NOTE)
      for character, _, sex, document in _QUEEN_CHARACTERS),
    # ---- Beneath a Steel Sky (CD version): one cast, no cast list -> one group.
    *STEEL_SKY_SPEAKERS,
)

EXCLUDED: tuple[Excluded, ...] = (
    Excluded("klettres-ar", "klettres-data",
             "a child: usr/share/klettres/ar/sounds.xml line 2 'my little nephew's voice'"),
    Excluded("klettres-pt_BR", "klettres-data",
             f"a child and his father in one set, no file list per person: {KLETTRES_HANDBOOK} "
             "line 613 'Lindonjohnson Monte (Father) and Michelle Monte 09 years (Son)'"),
    Excluded("klettres-nn", "klettres-data",
             "synthetic: usr/share/klettres/nn/sounds.xml line 7 'generated using the commercial "
             "CereVoice Cloud text-to-speech service'"),
    Excluded("klettres-es", "klettres-data",
             f"a woman and a man in one set, no document says which files are whose: "
             f"{KLETTRES_HANDBOOK} line 639 'Ana Belén Caballero and Juan Pedro Paredes'"),
    Excluded("klettres-it", "klettres-data",
             f"the credit does not settle whose voice it is: {KLETTRES_HANDBOOK} line 629 names "
             "Pietro Pasotti, the git tree's AUTHORS names Alessandro Pasotti"),
    Excluded("klettres-nl", "klettres-data",
             f"a supplier credit only ({KLETTRES_HANDBOOK} line 619 'Dutch sounds: Geert Stams'); "
             "../shared/DATA.md flags the set as possibly another person's voice and no second "
             "document settles it"),
    Excluded("klettres-de", "klettres-data",
             f"two different voices (alpha and syllab, ../shared/DATA.md) under one credit "
             f"({KLETTRES_HANDBOOK} line 625 'German sounds: Helmut Kriege'); no document says "
             "which set is his"),
    Excluded("klettres-en_GB", "klettres-data",
             "credited to Lisa Kriege ('British English sounds', about-dialog credit added by "
             "git commit 08fb450, sent from Helmut Kriege's address); no document says whether "
             "she recorded them as an adult or a child"),
    Excluded("klettres-ru", "klettres-data",
             "no speaker named: sounds.xml line 2 'Russian sounds made at Google Code-in' "
             "(a contest for school pupils, so possibly a child)"),
    Excluded("klettres-nb", "klettres-data",
             "no speaker named: sounds.xml 'Sounds taken from GCompris ... Thanks to "
             "Johnstad/Gabor'"),
    Excluded("klettres-hu", "klettres-data", "no credit or comment names a speaker"),
    Excluded("klettres-uk", "klettres-data", "no credit or comment names a speaker"),
    Excluded("klettres-ml", "klettres-data", "no credit or comment names a speaker"),
    Excluded("klettres-tn", "klettres-data", "no credit or comment names a speaker"),
    Excluded("ktuberling-others", "ktuberling-data",
             "no credits in the package; in the source tree only sounds/el/README names a "
             "recorder ('korgman', a handle that gives no sex) and sounds/nn is text-to-speech "
             "(README.md: CereVoice); the other sets have no document"),
    Excluded("drascula-musician", "drascula, drascula-spanish",
             "'E<n>.als' (talk_mus): no line of the game's text found that gives this "
             "character's sex"),
    Excluded("drascula-F", "drascula, drascula-spanish",
             "'F<n>.als' (3 files): no talk_* function names this prefix"),
    Excluded("drascula-S", "drascula, drascula-spanish", "'S<n>.als': sound effects"),
    Excluded("amazon_queen-others", "flight-of-the-amazon-queen",
             "the other dialogue persons (Bob, Henry, Ian, Lou, Laris, the pygmies, the "
             "witch, the oracle, ...) and all cutaway (C*.SB) lines: not admitted, since no "
             "line of the text collected so far states their sex or the cutaway speaker tables "
             "are not read yet"),
    Excluded("drascula-italian", "drascula-italian",
             "reuses the English audio (../shared/DATA.md): the same speakers twice"),
    Excluded("steel_sky-machines", "beneath-a-steel-sky",
             "robots, androids, holograms and machines: joey and ken (whose cursor text is "
             "'Joey'), medi ('Robot'), holo ('Projector', the receptionist hologram of "
             "HELGA_SPEECH), hologram_b (a recorded message), sc36_jukebox ('Jukebox'), "
             "sc32_buzzer ('Button', an intercom), and the 'gallagher' compact of the "
             "underworld ('Corpse')"),
    Excluded("steel_sky-undocumented", "beneath-a-steel-sky",
             "sc42_clerk (no line found that gives the clerk's sex), sc32_vincent (cursor text "
             "16457 'Boy': possibly a child), skorl_guard and wreck_guard (cursor text 28710 "
             "'Security Officer'; no line found that gives their sex), monitor (labelled 'Man', "
             "3 lines: its GORDON_SPEECH is also entered from HELGA_ACTION, where var 120 is "
             "not set, so the reader drops that script), and every line whose speaker the "
             "reader cannot attribute from the scripts (a line two speakers claim, lines of "
             "scripts the reader does not follow)"),
)

_BY_ID = {s.id: s for s in SPEAKERS}


def speaker(speaker_id: str) -> Speaker:
    """The documented speaker with this id.

    Args:
        speaker_id: e.g. ``"klettres-cs"``.

    Raises:
        KeyError: naming the id, when no document admits that speaker.
    """
    try:
        return _BY_ID[speaker_id]
    except KeyError:
        raise KeyError(f"no documented speaker {speaker_id!r} in apps/voice_gender/speakers.py"
                       ) from None


def is_reserved(package: str) -> bool:
    """Whether a Debian package is one of the reserved independent test sets.

    Args:
        package: a Debian package name.
    """
    return package in RESERVED_PACKAGES or package.startswith(RESERVED_PACKAGE_PREFIXES)


def _check_table() -> None:
    # Import-time guard: a malformed row is a programming error, caught by any import.
    seen = set()
    for s in SPEAKERS:
        if s.id in seen:
            raise ValueError(f"speaker {s.id!r} is listed twice")
        seen.add(s.id)
        if s.sex not in SEXES:
            raise ValueError(f"speaker {s.id!r}: sex must be one of {SEXES}, got {s.sex!r}")
        if is_reserved(s.package):
            raise ValueError(f"speaker {s.id!r} comes from reserved package {s.package!r}")
        if not s.document:
            raise ValueError(f"speaker {s.id!r} has no document")


_check_table()


def _check_steel_sky() -> None:
    # The same guard for the steel_sky rows kept outside SPEAKERS until the reader is registered.
    ids = [s.id for s in STEEL_SKY_SPEAKERS]
    if len(ids) != len(set(ids)):
        raise ValueError("steel_sky speaker ids must be unique")
    for s in STEEL_SKY_SPEAKERS:
        if s.sex not in SEXES or not s.document:
            raise ValueError(f"speaker {s.id!r}: needs a sex in {SEXES} and a document")


_check_steel_sky()
