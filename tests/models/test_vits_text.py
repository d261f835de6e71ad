"""text_to_ids: MMS vocabularies, original-VITS phonemes, and the demo table of random-weight voices."""

from __future__ import annotations

from talkrt.models.vits_text import DEMO_CHARACTERS, ORIGINAL_SYMBOLS, text_to_ids


def test_mms_vocabulary_with_blanks() -> None:
    vocab = {"<pad>": 0, "h": 1, "i": 2, " ": 3}
    assert text_to_ids("Hi hi!", {"vocab": vocab, "add_blank": True}) == [0, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0]
    assert text_to_ids("hi", {"vocab": vocab, "add_blank": False}) == [1, 2]


def test_original_phonemes() -> None:
    ids = text_to_ids("həlˈoʊ", {"phonemes": True, "add_blank": False})
    assert [ORIGINAL_SYMBOLS[i] for i in ids] == list("həlˈoʊ")


def test_random_voice_uses_the_demo_table_within_its_vocabulary() -> None:
    ids = text_to_ids("Hello, World?", {"vocab": None, "phonemes": False, "vocab_size": 10, "add_blank": True})
    assert ids[0::2] == [0] * (len(ids) // 2 + 1)  # blanks around every character
    spoken = ids[1::2]
    assert len(spoken) == len("hello, world?") and all(1 <= i < 10 for i in spoken)
    assert spoken[0] == 1 + DEMO_CHARACTERS.index("h") % 9
