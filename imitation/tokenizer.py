"""Tokenizers, saved with every checkpoint: words (``Tokenizer``, kind "word") or words with their
character n-grams (``NgramTokenizer``, kind "ngram").

Texts are lower-cased, number words are read as numerals ("agent three" is "agent 3", "twenty-one"
is "21"; ``normalize``), and split into words and numbers; a word outside the vocabulary becomes
``<unk>`` (never an error), so researchers can type prompts the model has not seen.

The word tokenizer reads every unseen word as the same ``<unk>``. The n-gram tokenizer (as
fastText does) also gives each word its character n-grams (3 to 5 characters of ``<word>``, with
boundary marks), hashed with CRC-32 into a fixed number of buckets: related words share pieces
("imitate", "imitating" and "imitator" share "<im", "imi", "mit", "ita", ...), and an unseen word is
read through its pieces instead of as ``<unk>``. Numbers (agent ids, counts) stay whole words with
no n-grams, so "agent 3" keeps binding to the agent wearing 3. An n-gram tokenizer encodes a word
as a row ``[word id, 1 + bucket, ..., 0, ...]`` of ``width`` ids (0 pads the row).
"""

from __future__ import annotations

import json
import re
import zlib
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


def training_words() -> list[str]:
    """Every word of the training families' forms, surfaces and descriptions, every colour and
    every number up to MAX_NUMBER, in order of first appearance. Held-out families' words are
    left out: the model never reads them in training."""
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
    texts += family_descriptions()
    for text in texts:
        for w in words(text):
            seen.setdefault(w, None)
    return list(seen)


def family_descriptions() -> list[str]:
    """Every persona family's descriptions over its grid (in the default world), so that DESCRIBE
    prompts of family personas read as known words."""
    from mirrorhall.agents.families import family_grid
    from mirrorhall.agents.personas import FAMILIES
    from mirrorhall.envs.core import WorldConfig

    return [spec.describe() for f in FAMILIES for spec in family_grid(f, WorldConfig(), agent=1)]


class Tokenizer:
    """Word <-> id. Id 0 is padding, id 1 the unknown word."""

    kind = "word"
    width: int | None = None
    """Ids per word: None, one id per word (``encode`` gives a list of ids)."""
    buckets = 0
    """Hashed n-gram buckets (none here)."""

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
        """The training words (``training_words``). Held-out families' words stay unknown words
        (and prompts holding them warn)."""
        return cls([PAD, UNK, *training_words()])

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
        """A tokenizer of either kind from its ``to_json``; ValueError names what is wrong."""
        if isinstance(data, dict) and data.get("kind") == "ngram" and cls is Tokenizer:
            return NgramTokenizer.from_json(data)
        if not isinstance(data, dict) or data.get("kind") != "word" or not isinstance(data.get("vocab"), list):
            raise ValueError("unknown tokenizer: expected {'kind': 'word', 'vocab': [...]} or "
                             "{'kind': 'ngram', 'vocab': [...], 'buckets': ...}")
        return cls(data["vocab"])

    def dumps(self) -> str:
        return json.dumps(self.to_json())


NGRAM_BUCKETS = 2**14
"""Default number of hashed n-gram buckets."""
MAX_BUCKETS = 2**24
NGRAM_SIZES = (3, 5)
"""Shortest and longest n-gram, in characters of ``<word>``."""
MAX_NGRAMS = 32
"""N-grams kept per word (``width`` - 1): every n-gram of a word of up to 11 letters; a longer
word keeps its first 32 distinct buckets."""


def char_ngrams(word: str, sizes: tuple[int, int] = NGRAM_SIZES) -> list[str]:
    """The character n-grams of ``<word>`` (boundary marks added), shortest first, in order; none
    for a number."""
    if word.isdigit():
        return []
    marked = f"<{word}>"
    return [marked[i: i + n] for n in range(sizes[0], sizes[1] + 1) for i in range(len(marked) - n + 1)]


def bucket(ngram: str, buckets: int) -> int:
    """The bucket of an n-gram: CRC-32 of its UTF-8 bytes modulo ``buckets`` (the same in every
    process and on every machine, unlike Python's salted ``hash``)."""
    return zlib.crc32(ngram.encode("utf-8")) % buckets


class NgramTokenizer(Tokenizer):
    """Words and their hashed character n-grams (see the module docstring).

    ``encode`` gives one row of ``width`` ids per word: the word's id (``<unk>`` outside the
    vocabulary) and then ``1 + bucket`` of each distinct n-gram bucket, padded with 0.
    """

    kind = "ngram"

    def __init__(self, vocab: Iterable[str], buckets: int = NGRAM_BUCKETS, sizes: tuple[int, int] = NGRAM_SIZES,
                 max_ngrams: int = MAX_NGRAMS):
        super().__init__(vocab)
        for name, v, lo, hi in (("buckets", buckets, 1, MAX_BUCKETS), ("max_ngrams", max_ngrams, 1, 256)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"n-gram tokenizer {name} must be an integer in {lo}..{hi}, got {v!r}")
        sizes = tuple(sizes)
        if (len(sizes) != 2 or any(isinstance(n, bool) or not isinstance(n, int) for n in sizes)
                or not 1 <= sizes[0] <= sizes[1] <= 16):
            raise ValueError(f"n-gram tokenizer sizes must be [shortest, longest] with 1 <= shortest <= longest "
                             f"<= 16, got {list(sizes)!r}")
        self.buckets, self.sizes, self.max_ngrams = buckets, sizes, max_ngrams
        self.width = 1 + max_ngrams
        self._rows: dict[str, list[int]] = {}

    def __eq__(self, other) -> bool:
        return (isinstance(other, NgramTokenizer) and self.vocab == other.vocab and self.buckets == other.buckets
                and self.sizes == other.sizes and self.max_ngrams == other.max_ngrams)

    @classmethod
    def default(cls) -> NgramTokenizer:
        return cls([PAD, UNK, *training_words()])

    def ngram_buckets(self, word: str) -> list[int]:
        """The distinct buckets of a word's n-grams, in order of first appearance (at most
        ``max_ngrams``); none for a number."""
        out = dict.fromkeys(bucket(g, self.buckets) for g in char_ngrams(word, self.sizes))
        return list(out)[: self.max_ngrams]

    def row(self, word: str) -> list[int]:
        """A word's ``width`` ids: its id, then 1 + each n-gram bucket, padded with 0."""
        row = self._rows.get(word)
        if row is None:
            grams = [1 + b for b in self.ngram_buckets(word)]
            row = [self.index.get(word, 1), *grams] + [0] * (self.max_ngrams - len(grams))
            if len(self._rows) < 65536:  # a cache of the words met, bounded against hostile input
                self._rows[word] = row
        return row

    def encode(self, text: str, max_len: int | None = None) -> list[list[int]]:
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0):
            raise ValueError(f"max_len must be None or a non-negative integer, got {max_len!r}")
        ws = words(text)
        return [self.row(w) for w in (ws if max_len is None else ws[:max_len])]

    def decode(self, ids: Iterable) -> str:
        return super().decode(r[0] if isinstance(r, list | tuple) else int(r) for r in ids)

    def to_json(self) -> dict:
        return {"kind": "ngram", "vocab": self.vocab, "buckets": self.buckets, "sizes": list(self.sizes),
                "max_ngrams": self.max_ngrams, "hash": "crc32"}

    @classmethod
    def from_json(cls, data: dict) -> NgramTokenizer:
        keys = {"kind", "vocab", "buckets", "sizes", "max_ngrams", "hash"}
        if not isinstance(data, dict) or data.get("kind") != "ngram" or set(data) != keys:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"n-gram tokenizer must have exactly the fields {sorted(keys)}, got {got}")
        if data["hash"] != "crc32":
            raise ValueError(f"n-gram tokenizer hash must be 'crc32', got {data['hash']!r}")
        if not isinstance(data["vocab"], list) or not isinstance(data["sizes"], list):
            raise ValueError("n-gram tokenizer 'vocab' and 'sizes' must be lists")
        return cls(data["vocab"], data["buckets"], tuple(data["sizes"]), data["max_ngrams"])


TOKENIZERS = {"word": Tokenizer, "ngram": NgramTokenizer}
"""Tokenizer kinds a training run can choose."""


def make_tokenizer(kind: str) -> Tokenizer:
    """The default tokenizer of a kind ("word" or "ngram")."""
    if kind not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}; got {kind!r}")
    return TOKENIZERS[kind].default()
