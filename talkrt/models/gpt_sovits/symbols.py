"""The GPT-SoVITS v2 phoneme table (732 symbols) and phone -> id lookup.

An id indexes a row of the GPT's text embedding and SoVITS' phone embedding, so
the table must hold the same symbols in the same order as the one the released
v2 weights were trained with. It is composed the same way:

1. pad, Mandarin initials, Mandarin finals with tones 1-5, Japanese phones,
   punctuation and the pause/unknown symbols, English ARPAbet phones;
   duplicates removed and sorted (Python string order);
2. then the Japanese pitch marks ``[`` and ``]``;
3. then the sorted Korean jamo (plus the two pause characters);
4. then the sorted Cantonese (jyutping) symbols, each prefixed with ``Y``.
"""

from __future__ import annotations

from collections.abc import Iterable

from talkrt.errors import TalkrtError

PAD = "_"
# Punctuation that has its own phone; every front end maps its punctuation onto these.
PUNCTUATION: tuple[str, ...] = ("!", "?", "…", ",", ".", "-")
PAUSES: tuple[str, ...] = ("SP", "SP2", "SP3", "UNK")

# Mandarin initials; AA/EE/OO are the zero initials of syllables that start with a/e/o.
MANDARIN_INITIALS: tuple[str, ...] = tuple("AA EE OO b c ch d f g h j k l m n p q r s sh t w x y z zh".split())
# Mandarin finals without tone: E (as in ye), En (as in yan), i0 (after z/c/s), ir (after zh/ch/sh/r).
MANDARIN_FINALS: tuple[str, ...] = tuple(
    "E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu o ong ou u ua uai uan uang ui un uo v van ve vn".split()
)
TONES = "12345"  # 5 = neutral tone

JAPANESE: tuple[str, ...] = tuple("I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z".split())
JAPANESE_PITCH: tuple[str, ...] = ("[", "]")

# CMUdict ARPAbet: vowels carry a stress digit (0 none, 1 primary, 2 secondary);
# bare "ER" and "IH" are in the table too.
ARPABET: frozenset[str] = frozenset(
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH EH0 EH1 EH2 "
    "ER ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0 OW1 OW2 OY0 OY1 OY2 "
    "P R S SH T TH UH0 UH1 UH2 UW0 UW1 UW2 V W Y Z ZH".split()
)

KOREAN = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"

# Cantonese: these finals/initials occur with all six tones ...
_YUE_TONED = (
    "a aa aai aak aam aan aang aap aat aau ai ak am an ang ap at au e ei ek eng eoi eon eot g i ik im in "
    "ing ip it iu k m n o oe oek oeng oi ok on ong ot ou p t u ui uk un ung ut yu yun yut"
).split()
# ... and these also without a tone digit.
_YUE_TONELESS = "a aa ai ak au b c d e f g gw h j k kw l m n ng o oi ok on ou p s t uk w z".split()
CANTONESE: frozenset[str] = frozenset(
    [f"Y{base}{tone}" for base in _YUE_TONED for tone in "123456"] + [f"Y{base}" for base in _YUE_TONELESS]
)


def _compose() -> tuple[str, ...]:
    mandarin_finals = [final + tone for tone in TONES for final in MANDARIN_FINALS]
    first = sorted({PAD, *MANDARIN_INITIALS, *mandarin_finals, *JAPANESE, *PUNCTUATION, *PAUSES, *ARPABET})
    return (*first, *JAPANESE_PITCH, *sorted(KOREAN), *sorted(CANTONESE))


SYMBOLS: tuple[str, ...] = _compose()
SYMBOL_TO_ID: dict[str, int] = {symbol: index for index, symbol in enumerate(SYMBOLS)}
VOCAB_SIZE = len(SYMBOLS)  # 732: the GPT's phoneme vocabulary and SoVITS' text embedding rows


def phones_to_ids(phones: Iterable[str], source: str = "the phone list") -> list[int]:
    """Ids of ``phones`` in the v2 table; every unknown symbol is named in one error line.

    ``source`` says where the phones came from (a front end, a file, the caller),
    so the message points at what to fix.
    """
    phones = list(phones)
    unknown = list(dict.fromkeys(p for p in phones if p not in SYMBOL_TO_ID))
    if unknown:
        shown = ", ".join(repr(p) for p in unknown[:12]) + (f" and {len(unknown) - 12} more" if len(unknown) > 12 else "")
        raise TalkrtError(f"{source} has symbols outside the GPT-SoVITS v2 phoneme table: {shown}")
    return [SYMBOL_TO_ID[p] for p in phones]


def ids_to_phones(ids: Iterable[int]) -> list[str]:
    """The symbols of ``ids`` (for messages and debugging); an id outside the table is refused."""
    out = []
    for index in ids:
        if not 0 <= int(index) < VOCAB_SIZE:
            raise TalkrtError(f"phone id {int(index)} is outside the GPT-SoVITS v2 table (0..{VOCAB_SIZE - 1})")
        out.append(SYMBOLS[int(index)])
    return out
