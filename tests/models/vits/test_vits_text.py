"""text_to_ids: MMS vocabularies, original-VITS phonemes, and the demo table of random-weight voices."""

from __future__ import annotations

import pytest

from talkrt.errors import TalkrtError
from talkrt.models.vits.text import DEMO_CHARACTERS, ORIGINAL_SYMBOLS, text_to_ids


def test_mms_vocabulary_with_blanks() -> None:
    vocab = {"<pad>": 0, "h": 1, "i": 2, " ": 3}
    assert text_to_ids("Hi hi", {"vocab": vocab, "add_blank": True}) == [0, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0]
    assert text_to_ids("hi", {"vocab": vocab, "add_blank": False}) == [1, 2]


MMS = {"vocab": {"<pad>": 0, "h": 1, "i": 2, " ": 3}, "add_blank": False}
PHONEMES = {"phonemes": True, "add_blank": False}
DEMO = {"vocab": None, "phonemes": False, "vocab_size": 10, "add_blank": False}


@pytest.mark.parametrize(
    "manifest, text, unknown, known",
    [
        (MMS, "Hi! hi?\n hi!", "'!', '?', '\\n'", "hi hi hi"),  # lowercased first: H is known
        (PHONEMES, "hə1lo1ʊ#", "'1', '#'", "həloʊ"),
        (DEMO, "Hé; hé", "'é', ';'", "h h"),
    ],
    ids=["mms", "phonemes", "demo"],
)
def test_unknown_symbols_are_listed_once_in_order_unless_skipped(manifest, text, unknown, known) -> None:
    with pytest.raises(TalkrtError) as error:
        text_to_ids(text, manifest)
    message = str(error.value)
    assert "symbols outside " in message and f": {unknown};" in message and "--skip-unknown" in message
    assert "\n" not in message  # one line, even for a newline in the text
    assert text_to_ids(text, manifest, skip_unknown=True) == text_to_ids(known, manifest)


def test_surrounding_whitespace_is_stripped_and_nothing_left_gives_no_ids() -> None:
    for manifest in (MMS, PHONEMES, DEMO):
        assert text_to_ids(" \t hi \n", manifest) == text_to_ids("hi", manifest)
        # Dropping symbols at the ends leaves no edge spaces either.
        assert text_to_ids("# hi €", manifest, skip_unknown=True) == text_to_ids("hi", manifest)
        assert text_to_ids("   ", {**manifest, "add_blank": True}) == []
        assert text_to_ids("#€", {**manifest, "add_blank": True}, skip_unknown=True) == []


def test_original_phonemes() -> None:
    ids = text_to_ids("həlˈoʊ", {"phonemes": True, "add_blank": False})
    assert [ORIGINAL_SYMBOLS[i] for i in ids] == list("həlˈoʊ")


def test_random_voice_uses_the_demo_table_within_its_vocabulary() -> None:
    ids = text_to_ids("Hello, World?", {"vocab": None, "phonemes": False, "vocab_size": 10, "add_blank": True})
    assert ids[0::2] == [0] * (len(ids) // 2 + 1)  # blanks around every character
    spoken = ids[1::2]
    assert len(spoken) == len("hello, world?") and all(1 <= i < 10 for i in spoken)
    assert spoken[0] == 1 + DEMO_CHARACTERS.index("h") % 9
