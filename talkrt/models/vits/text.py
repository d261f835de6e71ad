"""Text to token ids for VITS models.

Two vocabularies:

* MMS-TTS character vocabularies (``vocab.json`` next to a transformers
  checkpoint): text is lowercased (except where a vocabulary entry matches as
  written), characters outside the vocabulary are dropped, surrounding spaces
  are stripped, and the blank id 0 is put before, between and after the
  characters when ``add_blank`` is set, as transformers' ``VitsTokenizer`` does
  for vocabularies that need no phonemizer. ``text_to_ids`` refuses such
  characters instead, unless told to skip them.
* The 178-symbol table of the original VITS (LJSpeech / VCTK models), whose
  inputs are IPA phonemes. Phonemizing (espeak) stays outside talkrt:
  ``encode_phonemes`` takes already-phonemized text.
"""

from __future__ import annotations

import os
from collections.abc import Container
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.fileio import read_json

# The original VITS symbol table (text/symbols.py, english_cleaners2): pad,
# punctuation, ASCII letters, then IPA letters.
PAD = "_"
PUNCTUATION = ';:,.!?¡¿—…"«»“” '
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LETTERS_IPA = (
    "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢǀǁǂǃ"
    "ˈˌːˑʼʴʰʱʲʷˠˤ˞↓↑→↗↘'\u0329'ᵻ"
)
ORIGINAL_SYMBOLS: tuple[str, ...] = (PAD, *PUNCTUATION, *LETTERS, *LETTERS_IPA)
# The apostrophe occurs twice in the IPA letters; as in the original
# (``{s: i for i, s in enumerate(symbols)}``) the later index wins.
ORIGINAL_SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(ORIGINAL_SYMBOLS)}


def intersperse(ids: list[int], blank: int = 0) -> list[int]:
    """``[b, x0, b, x1, ..., b]``: the blank before, between and after every id."""
    result = [blank] * (2 * len(ids) + 1)
    result[1::2] = ids
    return result


def encode_phonemes(ipa_text: str, add_blank: bool = True, strict: bool = False) -> list[int]:
    """Ids of already-phonemized text in the original 178-symbol table.

    Symbols outside the table are skipped, as the original ``text_to_sequence``
    would fail on them (``strict=True`` raises instead).
    """
    ids = []
    for char in ipa_text:
        index = ORIGINAL_SYMBOL_TO_ID.get(char)
        if index is None:
            if strict:
                raise TalkrtError(f"{char!r} (U+{ord(char):04X}) is not in the VITS phoneme table")
            continue
        ids.append(index)
    return intersperse(ids) if add_blank else ids


class VitsTokenizer:
    """MMS-TTS character tokenizer (no phonemizer, no uroman)."""

    def __init__(self, vocab: dict[str, int], add_blank: bool = True, normalize: bool = True, language: str | None = None) -> None:
        if not vocab:
            raise TalkrtError("the VITS vocabulary is empty")
        self.vocab = {str(k): int(v) for k, v in vocab.items()}
        self.add_blank = add_blank
        self.normalize = normalize
        self.language = language

    @classmethod
    def from_file(cls, vocab_file: str | os.PathLike, add_blank: bool | None = None, normalize: bool | None = None) -> VitsTokenizer:
        """From a ``vocab.json``; ``add_blank``/``normalize``/``language`` default to the
        ``tokenizer_config.json`` beside it (True/True/None without one)."""
        path = Path(vocab_file)
        if path.is_dir():
            path = path / "vocab.json"
        if not path.is_file():
            raise TalkrtError(f"VITS vocabulary not found: {path}")
        vocab = read_json(path)
        config_path = path.parent / "tokenizer_config.json"
        settings = read_json(config_path) if config_path.is_file() else {}
        if settings.get("phonemize") or settings.get("is_uroman"):
            which = "a phonemizer" if settings.get("phonemize") else "uroman romanization"
            # Still usable with pre-processed text; the caller is told through the flag.
            settings = {**settings, "_needs": which}
        tokenizer = cls(
            vocab,
            add_blank=settings.get("add_blank", True) if add_blank is None else add_blank,
            normalize=settings.get("normalize", True) if normalize is None else normalize,
            language=settings.get("language"),
        )
        tokenizer.needs = settings.get("_needs")
        return tokenizer

    needs: str | None = None  # "a phonemizer" / "uroman romanization" when the text must be pre-processed

    def normalize_text(self, text: str) -> str:
        """Lowercase, except where a vocabulary entry matches the text as written."""
        out = []
        i = 0
        entries = list(self.vocab)
        while i < len(text):
            for entry in entries:
                if entry and text.startswith(entry, i):
                    out.append(entry)
                    i += len(entry)
                    break
            else:
                out.append(text[i].lower())
                i += 1
        return "".join(out)

    def encode(self, text: str, skip_unknown: bool = True) -> list[int]:
        """Token ids; with ``normalize``, characters outside the vocabulary are dropped as transformers
        drops them, or refused in one error that lists them when ``skip_unknown`` is False."""
        if self.normalize:
            text = self.normalize_text(text)
        if self.language == "ron":
            text = text.replace("ț", "ţ")
        if self.normalize:
            text = known_text(text, self.vocab, skip_unknown, "this voice's vocabulary")
        ids = []
        for char in text:
            if char not in self.vocab:
                if "<unk>" in self.vocab:
                    ids.append(self.vocab["<unk>"])
                    continue
                raise TalkrtError(f"{char!r} is not in the VITS vocabulary (and it has no <unk>)")
            ids.append(self.vocab[char])
        # Like transformers, nothing left to say gives no ids at all (not a lone blank).
        return intersperse(ids) if self.add_blank and ids else ids

    def __call__(self, text: str) -> list[int]:
        return self.encode(text)


# For random-weight models, which have no vocabulary: letters, space and punctuation
# on ids 1.. (0 stays the blank), wrapped into the model's vocabulary size.
DEMO_CHARACTERS = " abcdefghijklmnopqrstuvwxyz'.,?!-"


def known_text(text: str, known: Container[str], skip_unknown: bool, where: str) -> str:
    """``text`` without the characters outside ``known`` (``skip_unknown``), else refused in one line
    listing them once each, in order; stripped, since dropping may leave spaces at the ends."""
    unknown = list(dict.fromkeys(char for char in text if char not in known))
    if unknown and not skip_unknown:
        shown = ", ".join(repr(char) for char in unknown)
        raise TalkrtError(f"the text has symbols outside {where}: {shown}; leave them out, or drop them with --skip-unknown")
    return "".join(char for char in text if char in known).strip()


def text_to_ids(text: str, manifest: dict, skip_unknown: bool = False) -> list[int]:
    """Token ids for ``text`` as the exported model expects them (see the VITS manifest).

    MMS models carry their character vocabulary; original VITS checkpoints take IPA
    phonemes (phonemize outside talkrt); random-weight models use DEMO_CHARACTERS.
    Leading and trailing whitespace is stripped first: MMS drops it anyway, and an edge
    pause is not something to ask for with spaces. A symbol the voice has no id for
    raises a TalkrtError that lists every such symbol, unless ``skip_unknown`` drops them.
    """
    text = text.strip()
    add_blank = bool(manifest.get("add_blank", True))
    if manifest.get("vocab"):
        return VitsTokenizer(manifest["vocab"], add_blank=add_blank).encode(text, skip_unknown=skip_unknown)
    if manifest.get("phonemes"):
        text = known_text(text, ORIGINAL_SYMBOL_TO_ID, skip_unknown, "the VITS phoneme table (this voice takes IPA phonemes)")
        # Nothing left to say gives no ids (not a lone blank), as for MMS vocabularies.
        return encode_phonemes(text, add_blank=add_blank) if text else []
    size = int(manifest.get("vocab_size") or len(DEMO_CHARACTERS) + 1)
    text = known_text(text.lower(), DEMO_CHARACTERS, skip_unknown, "the demo characters of a random-weight voice")
    ids = [1 + DEMO_CHARACTERS.index(c) % (size - 1) for c in text]
    return intersperse(ids) if add_blank and ids else ids
