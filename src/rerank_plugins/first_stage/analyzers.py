"""Analyzers for the lexical first stage: how texts become the tokens BM25 counts.

BM25 is only as good as its tokens, and what a good token is depends on the language: English wants
stemming and stopwords, Korean attaches particles to words (so whole words rarely match) and is served well
by character bigrams or morphemes, and scripts without spaces need bigrams. ``resolve_analyzer("auto")``
picks one from the characters of a sample of the corpus; the choice is recorded in the index manifest.
"""

from __future__ import annotations

import importlib
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from rerank_plugins._validation import check_texts

INSTALL_HINT = "pip install 'rerank-plugins[lexical]'"
AUTO_SAMPLE_TEXTS = 200
AUTO_SAMPLE_CHARS = 5000
"""``auto`` reads at most this many characters of each of the first ``AUTO_SAMPLE_TEXTS`` texts."""
AUTO_HANGUL_SHARE = 0.3
AUTO_LATIN_SHARE = 0.5

_HANGUL = "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff"
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_THAI_LAO_KHMER = "\u0e00-\u0eff\u1780-\u17ff"
_WORD_OUTSIDE = r"(?:(?![{chars}])\w)+"


def _run_pattern(chars: str) -> re.Pattern[str]:
    """Runs of ``chars`` (bigrammed) or runs of other word characters (kept whole)."""
    return re.compile(f"(?P<run>[{chars}]+)|(?P<word>{_WORD_OUTSIDE.format(chars=chars)})")


_KOREAN_RUNS = _run_pattern(_HANGUL + _HAN)
_GENERIC_RUNS = _run_pattern(_HANGUL + _HAN + _KANA + _THAI_LAO_KHMER)
_WORDS = re.compile(r"\w+")
_HANGUL_CHAR = re.compile(f"[{_HANGUL}]")
_MORPH_TAG_PREFIXES = ("N", "V", "M", "X")
_MORPH_SYMBOL_TAGS = frozenset({"SL", "SN", "SH"})
"""Kiwi's symbol tags that are words (Latin, numbers, Hanja); other S* tags are punctuation."""


def require_optional(module: str, package: str) -> ModuleType:
    """``module``, or an ImportError that says how to install the lexical extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this analyzer needs {package}: {INSTALL_HINT}") from None


class Analyzer(ABC):
    """Turns texts into token lists; ``config()`` is what the index manifest records about it."""

    name: str = ""
    restorable = True
    """Whether :func:`resolve_analyzer` can rebuild the analyzer from ``config()["name"]`` when an index loads."""

    def __init__(self) -> None:
        self.chosen_by: str | None = None
        """``"auto"`` when :func:`resolve_analyzer` picked this analyzer from sample texts."""

    @abstractmethod
    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        """One token list per text (possibly empty)."""

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name}
        if self.chosen_by is not None:
            config["chosen_by"] = self.chosen_by
        return config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


class EnglishAnalyzer(Analyzer):
    """Lowercased word tokens without English stopwords (bm25s's list), Snowball-stemmed (PyStemmer)."""

    name = "english"

    def __init__(self) -> None:
        super().__init__()
        stemmer = require_optional("Stemmer", "PyStemmer")
        self.stopwords = frozenset(require_optional("bm25s.stopwords", "bm25s").STOPWORDS_EN)
        self._stemmer = stemmer.Stemmer("english")
        self._lock = threading.Lock()  # a PyStemmer object is not safe to share between threads

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        words = [[w for w in _WORDS.findall(text.lower()) if w not in self.stopwords] for text in texts]
        with self._lock:
            return [self._stemmer.stemWords(w) for w in words]


class _RunBigramAnalyzer(Analyzer):
    """Bigrams inside each run of the given scripts (never across a space or punctuation), other words whole."""

    pattern: re.Pattern[str]

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        return [self._tokens(text) for text in texts]

    def _tokens(self, text: str) -> list[str]:
        tokens: list[str] = []
        for match in self.pattern.finditer(text.lower()):
            run = match.group("run")
            if run is None:
                tokens.append(match.group("word"))
            elif len(run) == 1:
                tokens.append(run)
            else:
                tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        return tokens


class KoreanBigramAnalyzer(_RunBigramAnalyzer):
    """Character bigrams of Hangul/Hanja words, Latin and digit runs as lowercase words.

    A bigram of "서울시에서" still matches "서울" in a query, whatever particle follows. No dependency; on
    KorQuAD (all 5,774 questions) nDCG@10 0.943, hit@10 0.991, at a twentieth of morphemes' indexing time.
    """

    name = "korean-bigram"
    pattern = _KOREAN_RUNS


class GenericAnalyzer(_RunBigramAnalyzer):
    """Lowercased word tokens; scripts written without spaces (CJK, Hangul, kana, Thai...) as bigrams."""

    name = "generic"
    pattern = _GENERIC_RUNS


_kiwi: Any = None
_kiwi_lock = threading.Lock()


def _shared_kiwi() -> Any:
    """One Kiwi for the process: creating it loads its model (about a second)."""
    global _kiwi
    with _kiwi_lock:
        if _kiwi is None:
            _kiwi = require_optional("kiwipiepy", "kiwipiepy").Kiwi()
        return _kiwi


class KoreanMorphAnalyzer(Analyzer):
    """Kiwi morphemes that carry meaning: nouns, verb/adjective stems, adverbs, roots, Latin, numbers, Hanja.

    Particles, endings and punctuation are dropped. About 20x slower to index than ``korean-bigram`` for a
    slightly better ranking on KorQuAD; also useful where real morphemes matter (e.g. term statistics).
    """

    name = "korean-morph"

    def __init__(self) -> None:
        super().__init__()
        require_optional("kiwipiepy", "kiwipiepy")  # fail now, not at the first document

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        if not texts:
            return []
        return [
            [t.form.lower() for t in tokens if t.tag.startswith(_MORPH_TAG_PREFIXES) or t.tag in _MORPH_SYMBOL_TAGS]
            for tokens in _shared_kiwi().tokenize(list(texts))
        ]


class KoreanAnalyzer(Analyzer):
    """Both Korean views at once: Kiwi morphemes and character bigrams, as one token list (the Korean default).

    Morphemes match the exact meaning-bearing units, bigrams forgive particles, compounds and segmentation
    errors. Measured on KorQuAD 1.0 dev (``bench/results/first-stage-korquad``; chosen on its train questions,
    reported on all 5,774): nDCG@10 0.961 and hit@10 0.994, against 0.949 / 0.989 for morphemes alone and
    0.943 / 0.991 for bigrams alone, at the indexing cost of the morphemes.
    """

    name = "korean"

    def __init__(self) -> None:
        super().__init__()
        self._bigrams, self._morphemes = KoreanBigramAnalyzer(), KoreanMorphAnalyzer()

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        return [b + m for b, m in zip(self._bigrams.analyze(texts), self._morphemes.analyze(texts))]


class CallableAnalyzer(Analyzer):
    """A caller's ``str -> list[str]``; an index built with it must be given the same function again to load."""

    name = "custom"
    restorable = False

    def __init__(self, function: Callable[[str], Sequence[str]]) -> None:
        super().__init__()
        self.function = function

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        out = []
        for i, text in enumerate(texts):
            tokens = self.function(text)
            if (
                isinstance(tokens, str)
                or not isinstance(tokens, Sequence)
                or not all(isinstance(t, str) for t in tokens)
            ):
                raise TypeError(
                    f"the analyzer {self.function!r} must return a list of str; for text {i} it "
                    f"returned {type(tokens).__name__}"
                )
            out.append(list(tokens))
        return out

    def config(self) -> dict[str, Any]:
        name = getattr(self.function, "__qualname__", type(self.function).__qualname__)
        module = getattr(self.function, "__module__", None)
        return {**super().config(), "function": f"{module}.{name}" if module else name, "restorable": False}


ANALYZERS: dict[str, type[Analyzer]] = {
    a.name: a for a in (EnglishAnalyzer, KoreanAnalyzer, KoreanBigramAnalyzer, KoreanMorphAnalyzer, GenericAnalyzer)
}


def choose_analyzer_name(sample_texts: Sequence[str]) -> str:
    """The analyzer ``auto`` picks for texts like these, from the share of Hangul and Latin among their letters."""
    hangul = latin = letters = 0
    for text in sample_texts[:AUTO_SAMPLE_TEXTS]:
        for char in text[:AUTO_SAMPLE_CHARS]:
            if char.isalpha():
                letters += 1
                if _HANGUL_CHAR.match(char):
                    hangul += 1
                elif char.isascii() or "\u00c0" <= char <= "\u024f" or "\u1e00" <= char <= "\u1eff":
                    latin += 1
    if letters and hangul / letters >= AUTO_HANGUL_SHARE:
        return KoreanAnalyzer.name
    if letters and latin / letters >= AUTO_LATIN_SHARE:
        return EnglishAnalyzer.name
    return GenericAnalyzer.name


def resolve_analyzer(
    spec: str | Analyzer | Callable[[str], Sequence[str]], sample_texts: Sequence[str] | None = None
) -> Analyzer:
    """An :class:`Analyzer` from a name in :data:`ANALYZERS`, ``"auto"`` (needs ``sample_texts``), an
    :class:`Analyzer` (returned as is) or a callable ``str -> list[str]``."""
    if isinstance(spec, Analyzer):
        return spec
    if isinstance(spec, str):
        if spec == "auto":
            if sample_texts is None:
                raise ValueError("analyzer='auto' needs sample_texts to choose from")
            sample = check_texts(list(sample_texts[:AUTO_SAMPLE_TEXTS]), "sample_texts")
            analyzer = ANALYZERS[choose_analyzer_name(sample)]()
            analyzer.chosen_by = "auto"
            return analyzer
        if spec not in ANALYZERS:
            raise ValueError(f"analyzer must be one of {['auto', *ANALYZERS]} or a callable, got {spec!r}")
        return ANALYZERS[spec]()
    if callable(spec):
        return CallableAnalyzer(spec)
    raise TypeError(f"analyzer must be a name, an Analyzer or a callable str -> list[str], got {type(spec).__name__}")
