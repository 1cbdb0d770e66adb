"""BM25 scored at query time over raw term frequencies, so that adds and deletes cost what they change.

bm25s precomputes each document's score for each of its terms with the corpus's statistics (document count,
average length, document frequencies) baked in. Every add or delete changes those statistics and so every
precomputed score: an update meant rebuilding the whole index, and adding documents one at a time cost O(N²).
Here the postings keep raw term frequencies in immutable segments (one per add, merged as they grow, as Lucene
does) and the statistics are applied when a query is scored, with bm25s's formulas (the tests compare). Scores
do not depend on how the postings are segmented: an index updated a thousand times scores exactly like one built
at once. The statistics may also come from outside (:class:`CorpusStatistics`), which is how shards of one corpus
score exactly like one index over all of it.

:class:`Postings` values are never changed in place: every update returns a new value (sharing what it can), so a
reader holding one sees one consistent corpus however long its search takes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

METHODS: tuple[str, ...] = ("lucene", "robertson", "atire")
"""BM25 variants (bm25s's names) that score a document without any query term 0."""


@dataclass(frozen=True)
class CorpusStatistics:
    """The corpus-wide figures a BM25 score depends on; shards add theirs up to score as one index."""

    documents: int
    total_length: int
    """Tokens in all documents together (the average length is ``total_length / documents``)."""
    document_frequencies: Mapping[str, int] = field(default_factory=dict)
    """Documents containing each term (only the terms asked for need to be here)."""

    def __add__(self, other: CorpusStatistics) -> CorpusStatistics:
        frequencies = Counter(self.document_frequencies)
        frequencies.update(other.document_frequencies)
        return CorpusStatistics(
            self.documents + other.documents, self.total_length + other.total_length, dict(frequencies)
        )


@dataclass(frozen=True, eq=False)
class _Segment:
    """Postings of some documents, grouped by term: ``slots[starts[i]:starts[i + 1]]`` hold ``terms[i]``."""

    terms: np.ndarray
    starts: np.ndarray
    slots: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_postings(cls, terms: np.ndarray, slots: np.ndarray, counts: np.ndarray) -> _Segment:
        order = np.lexsort((slots, terms))
        terms, slots, counts = terms[order], slots[order], counts[order]
        unique, first = np.unique(terms, return_index=True)
        return cls(unique, np.append(first, len(terms)), slots, counts)

    @classmethod
    def merge(cls, segments: Sequence[_Segment], alive: np.ndarray) -> _Segment:
        """One segment holding the given segments' postings of live documents."""
        terms = np.concatenate([np.repeat(s.terms, np.diff(s.starts)) for s in segments])
        slots = np.concatenate([s.slots for s in segments])
        counts = np.concatenate([s.counts for s in segments])
        live = alive[slots]
        return cls.from_postings(terms[live], slots[live], counts[live])

    @property
    def size(self) -> int:
        return len(self.slots)


@dataclass(frozen=True, eq=False)
class Postings:
    """Every document's term frequencies and length, by slot (the order documents were added in).

    Deleted documents keep their slot, marked dead, until :meth:`compacted` renumbers the slots (worth it once
    :attr:`wasteful`); :attr:`positions` maps slots to the positions of the live documents.
    """

    vocabulary: dict[str, int] = field(default_factory=dict)
    """Term -> term id; only ever grows (shared between versions: ids past :attr:`frequencies` are unseen)."""
    segments: tuple[_Segment, ...] = ()
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Slot -> position among live documents (-1 for a dead slot)."""
    frequencies: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Term id -> live documents containing it."""
    documents: int = 0
    total_length: int = 0

    def add(self, token_lists: Sequence[Sequence[str]]) -> Postings:
        """These postings with documents appended (new slots, in order)."""
        if not token_lists:
            return self
        vocabulary = self.vocabulary
        first = len(self.lengths)
        terms: list[int] = []
        slots: list[int] = []
        counts: list[int] = []
        for slot, tokens in enumerate(token_lists, first):
            for term, count in Counter(vocabulary.setdefault(t, len(vocabulary)) for t in tokens).items():
                terms.append(term)
                slots.append(slot)
                counts.append(count)
        lengths = np.array([len(t) for t in token_lists], np.int64)
        term_array = np.array(terms, np.int32)
        frequencies = np.concatenate([self.frequencies, np.zeros(len(vocabulary) - len(self.frequencies), np.int64)])
        frequencies += np.bincount(term_array, minlength=len(vocabulary))
        # 12 bytes a posting (int32 slots: 2**31 documents an index; shard beyond); whole counts are exact in float32
        segment = _Segment.from_postings(term_array, np.array(slots, np.int32), np.array(counts, np.float32))
        alive = np.concatenate([self.alive, np.ones(len(token_lists), bool)])
        new = np.arange(self.documents, self.documents + len(token_lists), dtype=np.int64)
        return replace(
            self,
            segments=_merged_tail((*self.segments, segment), alive),
            lengths=np.concatenate([self.lengths, lengths]),
            alive=alive,
            positions=np.concatenate([self.positions, new]),
            frequencies=frequencies,
            documents=self.documents + len(token_lists),
            total_length=self.total_length + int(lengths.sum()),
        )

    def delete(self, slots: Sequence[int], token_lists: Sequence[Sequence[str]]) -> Postings:
        """These postings without the live documents in ``slots`` (whose tokens are ``token_lists``)."""
        if not len(slots):
            return self
        slots = np.asarray(slots, np.int64)
        if not self.alive[slots].all() or len(np.unique(slots)) < len(slots):
            raise ValueError("only live documents can be deleted, each once")
        alive = self.alive.copy()
        alive[slots] = False
        frequencies = self.frequencies.copy()
        for tokens in token_lists:
            frequencies[[self.vocabulary[t] for t in set(tokens)]] -= 1
        return replace(
            self,
            alive=alive,
            positions=np.where(alive, np.cumsum(alive) - 1, -1),
            frequencies=frequencies,
            documents=self.documents - len(slots),
            total_length=self.total_length - int(self.lengths[slots].sum()),
        )

    @property
    def wasteful(self) -> bool:
        """Dead slots outnumber live ones: compacting now keeps deletes O(1) amortised."""
        return 2 * self.documents < len(self.alive)

    def compacted(self) -> Postings:
        """The same postings with dead slots dropped and live ones renumbered in order (slot = position)."""
        live = np.flatnonzero(self.alive)
        merged = _Segment.merge(self.segments, self.alive) if self.segments else None
        renumbered = None if merged is None else self.positions[merged.slots].astype(np.int32)
        segments = () if merged is None else (replace(merged, slots=renumbered),)
        return replace(
            self,
            segments=segments,
            lengths=self.lengths[live],
            alive=np.ones(len(live), bool),
            positions=np.arange(len(live), dtype=np.int64),
        )

    def statistics(self, terms: Iterable[str]) -> CorpusStatistics:
        """This corpus's figures for ``terms`` (terms it has never seen have frequency 0)."""
        return CorpusStatistics(self.documents, self.total_length, {t: self._frequency(t) for t in set(terms)})

    def _frequency(self, term: str) -> int:
        term_id = self.vocabulary.get(term, len(self.frequencies))
        return int(self.frequencies[term_id]) if term_id < len(self.frequencies) else 0

    def scores(
        self, tokens: Sequence[str], k1: float, b: float, method: str, statistics: CorpusStatistics | None = None
    ) -> np.ndarray:
        """Each slot's BM25 score for a query's ``tokens`` (a repeated token counts again, as in bm25s); dead
        slots and slots without a query term score 0. ``statistics``: the corpus's (default: these postings')."""
        stats = statistics or self.statistics(tokens)
        scores = np.zeros(len(self.lengths))
        known = [(self.vocabulary.get(t, len(self.frequencies)), stats.document_frequencies.get(t, 0)) for t in tokens]
        known = [(term, frequency) for term, frequency in known if term < len(self.frequencies) and frequency > 0]
        if not known or not stats.documents:
            return scores
        terms = np.array([term for term, _ in known], np.int64)
        weights = np.array([_idf(method, stats.documents, frequency) for _, frequency in known])
        found_slots, found_counts, found_weights = [], [], []
        for segment in self.segments:  # all of a document's postings are in one segment
            if not len(segment.terms):
                continue
            at = np.minimum(np.searchsorted(segment.terms, terms), len(segment.terms) - 1)
            for i in np.flatnonzero(segment.terms[at] == terms):
                start, end = segment.starts[at[i]], segment.starts[at[i] + 1]
                found_slots.append(segment.slots[start:end])
                found_counts.append(segment.counts[start:end])
                found_weights.append(np.full(end - start, weights[i]))
        if found_slots:
            slots = np.concatenate(found_slots)
            norm = k1 * ((1 - b) + b * self.lengths[slots] / (stats.total_length / stats.documents))
            counts = np.concatenate(found_counts).astype(np.float64)
            values = np.concatenate(found_weights) * _saturate(method, counts, norm, k1)
            # bincount adds in array order, so each document gets its terms' shares in query order however the
            # postings are segmented: the sum (and so the ranking) is the same bit for bit.
            scores = np.bincount(slots, weights=values, minlength=len(self.lengths))
            if self.documents < len(self.alive):  # dead slots keep their postings until compaction
                scores[~self.alive] = 0.0
        return scores


def _idf(method: str, documents: int, frequency: int) -> float:
    """bm25s's inverse document frequency for each variant."""
    if method == "lucene":
        return float(np.log(1 + (documents - frequency + 0.5) / (frequency + 0.5)))
    if method == "robertson":
        return float(np.log(max((documents - frequency + 0.5) / (frequency + 0.5), 1.0)))
    return float(np.log(documents / frequency))  # atire


def _saturate(method: str, counts: np.ndarray, norm: np.ndarray, k1: float) -> np.ndarray:
    """bm25s's term-frequency part (``norm``: k1 times the length normalisation)."""
    if method == "atire":
        return counts * (k1 + 1) / (counts + norm)
    return counts / (norm + counts)


def _merged_tail(segments: tuple[_Segment, ...], alive: np.ndarray) -> tuple[_Segment, ...]:
    """Merge the newest segments while the one before is no bigger (a binary counter: O(log N) segments, each
    posting merged O(log N) times)."""
    while len(segments) > 1 and segments[-2].size <= segments[-1].size:
        segments = (*segments[:-2], _Segment.merge(segments[-2:], alive))
    return segments
