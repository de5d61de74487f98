"""A word-level tokenizer whose vocabulary is saved with every checkpoint.

Texts are lower-cased, number words are read as numerals ("agent three" is "agent 3", "twenty-one"
is "21"; ``normalize``), and split into words and numbers; a word outside the vocabulary becomes
``<unk>`` (never an error), so researchers can type prompts the model has not seen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from mirrorhall.agents.personas import STYLES
from mirrorhall.envs.core import COLOR_NAMES

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z]+|\d+")
MAX_NUMBER = 255


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_NUMBER = re.compile(rf"\b(?:({'|'.join(_TENS)})(?:[\s-]+({'|'.join(_UNITS[1:10])}))?|({'|'.join(_UNITS)}))\b")


def normalize(text: str) -> str:
    """Lower-case ``text`` and write its number words as numerals: "agent Three" -> "agent 3",
    "twenty-one" -> "21" (0 to 99)."""
    def numeral(m: re.Match) -> str:
        if m.group(3):
            return str(NUMBER_WORDS[m.group(3)])
        return str(NUMBER_WORDS[m.group(1)] + (NUMBER_WORDS[m.group(2)] if m.group(2) else 0))

    return _NUMBER.sub(numeral, str(text).lower())


def words(text: str) -> list[str]:
    """The words and numbers of a text, after ``normalize``."""
    return _WORD.findall(normalize(text))


class Tokenizer:
    """Word <-> id. Id 0 is padding, id 1 the unknown word."""

    def __init__(self, vocab: Iterable[str]):
        vocab = list(vocab)
        if vocab[:2] != [PAD, UNK] or len(set(vocab)) != len(vocab):
            raise ValueError("tokenizer vocabulary must start with <pad>, <unk> and hold no duplicates")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.vocab == other.vocab

    @classmethod
    def default(cls) -> Tokenizer:
        """Every word of the training families' forms, surfaces and descriptions, every colour and
        every number up to MAX_NUMBER. Held-out families' words are left out: the model never
        reads them in training, so they stay unknown words (and prompts holding them warn)."""
        from mirrorhall.agents.personas import BELIEVER_MEMORY, MEMORYLESS_MEMORY
        from mirrorhall.imitation.prompts import (
            AGENT_PHRASES,
            FILLERS_AFTER,
            FILLERS_BEFORE,
            TEMPLATES,
        )

        seen: dict[str, None] = {}
        texts = [t.text for temps in TEMPLATES.values() for t in temps if not t.held_out]
        texts += [*AGENT_PHRASES, *FILLERS_BEFORE, *FILLERS_AFTER, BELIEVER_MEMORY, MEMORYLESS_MEMORY]
        texts = [re.sub(r"\{\w*\}", " ", text) for text in texts]  # placeholders are not words
        texts += [f"a an {s} agent that likes no gem gems in particular and ignores approaches "
                  "avoids follows others" for s in STYLES]
        texts += list(COLOR_NAMES) + [str(i) for i in range(MAX_NUMBER + 1)]
        for text in texts:
            for w in words(text):
                seen.setdefault(w, None)
        return cls([PAD, UNK, *seen])

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0):
            raise ValueError(f"max_len must be None or a non-negative integer, got {max_len!r}")
        ids = [self.index.get(w, 1) for w in words(text)]
        return ids if max_len is None else ids[:max_len]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in ids if i != 0)

    def to_json(self) -> dict:
        return {"kind": "word", "vocab": self.vocab}

    @classmethod
    def from_json(cls, data: dict) -> Tokenizer:
        if not isinstance(data, dict) or data.get("kind") != "word" or not isinstance(data.get("vocab"), list):
            raise ValueError("unknown tokenizer: expected {'kind': 'word', 'vocab': [...]}")
        return cls(data["vocab"])

    def dumps(self) -> str:
        return json.dumps(self.to_json())
