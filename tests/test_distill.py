"""Distillation: the student keeps the layers asked for, learns the teacher's order, saves a normal cross-encoder.

The learning test distills a teacher that really ranks (a tiny reranker trained on the topic task of
test_learning.py) on *unlabelled* queries, and compares the student's agreement with the teacher on held-out queries
before and after training: a loss that ignores the teacher leaves the agreement where the truncated, untrained
student had it, and targets misaligned with their documents drive it down (both checked by breaking the code).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from rerank_plugins.data import RetrievalDataset, from_pairs
from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.fusion import stored_fusion_weight
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.schema import Document, SearchHit
from rerank_plugins.training import DistillationConfig, distill_cross_encoder
from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig, train_cross_encoder
from rerank_plugins.training.distill import kept_layers, teacher_groups, trainer, truncated_student
from test_learning import topic_data  # the topic task: a query's words and its positive share one topic


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: tiny models train much faster than with threads fighting a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tiny_cross_path, tmp_path_factory) -> Path:
    """A 2-layer tiny reranker trained to rank a query's topic first: its scores depend on query and document."""
    data, negatives = topic_data(2000, seed=1)  # test_learning.py's set-up: ~30 s; with fewer queries it ranks nothing
    path, _ = train_cross_encoder(
        data,
        negatives,
        tmp_path_factory.mktemp("teacher") / "ce",
        base_model=str(tiny_cross_path),
        config=CrossEncoderTrainingConfig(
            epochs=1, queries_per_batch=8, num_negatives=3, learning_rate=2e-3, head_lr_multiplier=1.0, max_length=64
        ),
        show_progress=False,
    )
    return path


def unlabelled(data: RetrievalDataset) -> RetrievalDataset:
    return RetrievalDataset(data.corpus, data.queries, {}, name=f"{data.name} (unlabelled)")


def candidates_of(data: RetrievalDataset, negatives: dict[str, list[str]]) -> dict[str, list[str]]:
    return {q: [f"{q}-pos", *negatives[q]] for q in data.queries}


def agreement(student: Path, teacher: Path, data: RetrievalDataset, candidates: dict[str, list[str]]) -> float:
    """Mean Spearman correlation of student and teacher scores over each query's candidates."""
    requests = [(data.queries[q], [data.corpus[d] for d in docs]) for q, docs in candidates.items()]
    ours = CrossEncoderBackend(student, cache_size=0).score_batch(requests)
    theirs = CrossEncoderBackend(teacher, cache_size=0).score_batch(requests)
    return float(np.mean([spearmanr(a, b).statistic for a, b in zip(ours, theirs)]))


class ListedCandidates(FirstStage):
    """A first stage returning given document ids for each query text, so a test controls what gets scored."""

    def __init__(self, corpus: dict[str, str], by_query: dict[str, list[str]]) -> None:
        self.corpus, self.by_query = corpus, by_query

    def search_batch(self, queries, k=10):
        return [
            [SearchHit(Document(self.corpus[d], d), i, -float(i)) for i, d in enumerate(self.by_query[q][:k])]
            for q in queries
        ]


def save_untrained_student(teacher: Path, directory: Path, layers) -> Path:
    from transformers import AutoTokenizer

    student, _ = truncated_student(teacher, layers)
    student.save_pretrained(directory)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(directory)
    return directory


def test_layers_kept_are_spread_from_first_to_last_or_named():
    assert kept_layers(6, 2) == [0, 5]
    assert kept_layers(6, 3) == [0, 2, 5]
    assert kept_layers(12, 4) == [0, 4, 7, 11]
    assert kept_layers(6, 1) == [5]
    assert kept_layers(6, [1, 3]) == [1, 3]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (6, "between 1 and 5"),
        (0, "between 1 and 5"),
        ([3, 1], "increasing"),
        ([0, 0], "increasing"),
        ([0, 6], "bad: \\[6\\]"),
        ([], "between 1 and 5"),
        ([0, 1, 2, 3, 4, 5], "between 1 and 5"),
    ],
)
def test_bad_layer_choices_are_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        kept_layers(6, layers)


@pytest.mark.parametrize("layers", [True, "2", 2.0])
def test_layers_of_the_wrong_type_are_refused(layers):
    with pytest.raises(TypeError, match="layers must be"):
        kept_layers(6, layers)


def test_student_is_the_teacher_with_the_kept_layers(tiny_cross_path):
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_cross_path).state_dict()
    student, keep = truncated_student(tiny_cross_path, [1])
    assert keep == [1] and student.config.num_hidden_layers == 1
    weights = student.state_dict()
    assert not any(".layer.1." in name for name in weights)
    for name, tensor in weights.items():
        source = name.replace(".layer.0.", ".layer.1.")
        assert (teacher[source] == tensor).all(), name


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
def test_distillation_learns_the_teachers_order_without_labels(teacher, tmp_path, bf16, monkeypatch, caplog):
    # As on a CPU without native bf16: asking for bf16 there must warn (emulated, ~20x slower), fp32 must not.
    monkeypatch.setattr(trainer, "cpu_computes_bf16", lambda: False)
    train, train_negatives = topic_data(240, seed=3)
    check, check_negatives = topic_data(40, seed=4)
    check_candidates = candidates_of(check, check_negatives)
    # Layer 0 alone: the scoring head never read its output, so the untrained student agrees little.
    before = agreement(save_untrained_student(teacher, tmp_path / "untrained", [0]), teacher, check, check_candidates)
    path, log = distill_cross_encoder(
        teacher,
        unlabelled(train),
        tmp_path / "student",
        candidates=candidates_of(train, train_negatives),
        layers=[0],
        config=DistillationConfig(epochs=2, queries_per_batch=8, learning_rate=2e-3, bf16=bf16),
        show_progress=False,
    )
    after = agreement(path, teacher, check, check_candidates)
    assert any("without native bf16" in r.getMessage() for r in caplog.records) == bf16
    assert before < 0.6, f"the untrained student already agrees with the teacher ({before:.3f}): this proves nothing"
    assert after >= 0.75 and after - before >= 0.3, f"held-out Spearman with the teacher {before:.3f} -> {after:.3f}"
    card = json.loads((path / "rerank_plugins_training.json").read_text())
    scores = card["scores"]
    assert scores["held_out_kl_to_teacher_after"] < scores["held_out_kl_to_teacher_before"] / 5
    assert card["distillation"]["layers_kept"] == [0] and "fusion" not in card  # no labels: nothing to tune on
    assert log.steps == 2 * 27  # 216 training queries (24 held out) in batches of 8, two epochs


def test_more_queries_are_scored_on_their_own_view_of_the_corpus(tiny_cross_path, tmp_path):
    """Pseudo-queries take a sentence out of their passage: the teacher must score the passage without it."""
    data = from_pairs([("cancer risk", "cancer risk in patients"), ("seoul city", "seoul is a city")])
    long_query = " ".join(["cancer"] * 200)  # pseudo-queries can be long sentences: left out, counted, not fatal
    more = RetrievalDataset(
        {d: f"{t} (other view)" for d, t in data.corpus.items()}, {"m1": "lung cancer", "m2": long_query}, {}
    )
    by_query = {q: list(data.corpus) for q in [*data.queries.values(), "lung cancer", long_query]}
    teacher = CrossEncoderBackend(tiny_cross_path, cache_size=0)
    seen = []
    original = teacher.score_batch
    teacher.score_batch = lambda requests, **kw: seen.extend(requests) or original(requests, **kw)
    path, log = distill_cross_encoder(
        teacher,
        data,
        tmp_path / "s",
        candidates=ListedCandidates(data.corpus, by_query),
        layers=1,
        held_out=0.5,
        more_queries=[more],
        config=DistillationConfig(epochs=1, queries_per_batch=1),
        show_progress=False,
    )
    assert ("lung cancer", [f"{t} (other view)" for t in data.corpus.values()]) in seen
    assert log.steps == 2  # one labelled training query + the fitting more query; the other labelled one is held out
    assert not any(query == long_query for query, _ in seen)
    card = json.loads((path / "rerank_plugins_training.json").read_text())
    assert card["scores"]["more_queries_left_out_too_long"] == {more.name: 1}
    with pytest.raises(TypeError, match="FirstStage"):
        distill_cross_encoder(
            teacher,
            data,
            tmp_path / "t",
            candidates={q: list(data.corpus) for q in data.queries},
            layers=1,
            more_queries=more,
        )


def test_cli_distills_over_a_first_stage_into_a_normal_cross_encoder(tiny_cross_path, tiny_bi_path, tmp_path, capsys):
    from sentence_transformers import CrossEncoder

    from rerank_plugins.cli import main

    data, negatives = topic_data(30, seed=5)
    # A second sentence per document: the `sentence` pseudo-queries take one out of its passage.
    rows = [
        {"query": data.queries[q], "positive": f"{data.corpus[f'{q}-pos']}. It is document {q} of a small corpus."}
        for q in data.queries
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "student"
    code = main(
        [
            "distill",
            "--data",
            str(pairs),
            "--teacher",
            str(tiny_cross_path),
            "--output",
            str(output),
            "--bi-encoder",
            str(tiny_bi_path),
            "--layers",
            "1",
            "--first-stage-k",
            "8",
            "--epochs",
            "1",
            "--held-out",
            "0.2",
            "--corpus-queries",
            "terms",
            "sentence",
            "--teacher-runtime",
            "onnx",
            "--bf16",
            "--label-weight",
            "0.5",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Student saved to" in printed
    assert f"Fusion weight stored for --fusion-weight auto: {stored_fusion_weight(output)}" in printed
    card = json.loads((output / "rerank_plugins_training.json").read_text())
    assert card["parameters"]["bf16"] is True and card["parameters"]["teacher_runtime"] == "onnx"
    assert card["parameters"]["label_weight"] == 0.5 and "labels weighted 0.5" in card["data"]
    assert "pseudo-queries (terms)" in card["data"] and "pseudo-queries (sentence)" in card["data"]
    assert card["data"].count("queries x") == 1
    assert card["training"]["steps"] > 24 / 16  # 24 labelled training queries plus the corpus's pseudo-queries
    assert json.loads((output / "config.json").read_text())["num_hidden_layers"] == 1
    assert stored_fusion_weight(output) is not None  # tuned on the labelled held-out queries: "auto" works
    assert "Fusion with the first stage" in (output / "README.md").read_text()
    assert CrossEncoder(str(output)).predict([("cancer", "cancer risk"), ("cancer", "seoul")]).shape == (2,)
    assert CrossEncoderBackend(output).score("cancer", ["cancer risk", "seoul"]).shape == (2,)


def test_teacher_scores_come_from_the_cache_on_a_second_run(tiny_cross_path, tmp_path):
    data = from_pairs([("cancer risk", "cancer risk in patients"), ("seoul city", "seoul is a city")])
    candidates = {q: list(data.corpus) for q in data.queries}
    teacher = CrossEncoderBackend(tiny_cross_path, cache_size=0)
    first = teacher_groups(teacher, data, candidates, cache=tmp_path / "scores.sqlite", show_progress=False)
    calls = []
    original = teacher.score_batch
    teacher.score_batch = lambda requests, **kw: calls.append(requests) or original(requests, **kw)
    second = teacher_groups(teacher, data, candidates, cache=tmp_path / "scores.sqlite", show_progress=False)
    assert not calls
    for a, b in zip(first, second):
        assert a.query_id == b.query_id and np.array_equal(a.teacher, b.teacher)
        assert np.allclose(a.teacher, original([(a.query, a.documents)])[0], atol=1e-6)


def test_deeper_candidate_lists_score_only_the_pairs_not_cached(tiny_cross_path, tmp_path):
    pairs = [("cancer risk", "cancer risk in patients"), ("seoul city", "seoul is a city")]
    data = from_pairs(pairs, corpus=["a third document about seoul"])
    teacher = CrossEncoderBackend(tiny_cross_path, cache_size=0)
    cache = tmp_path / "scores.sqlite"
    docs = sorted(data.corpus, key=lambda d: data.corpus[d] == "a third document about seoul")
    teacher_groups(teacher, data, {q: docs[:2] for q in data.queries}, cache=cache, show_progress=False)
    calls = []
    original = teacher.score_batch
    teacher.score_batch = lambda requests, **kw: calls.append(requests) or original(requests, **kw)
    deep = teacher_groups(teacher, data, {q: docs for q in data.queries}, cache=cache, show_progress=False)
    assert [[list(d) for _, d in requests] for requests in calls] == [[["a third document about seoul"]] * 2]
    for group in deep:  # cached and fresh scores in the candidates' order
        assert np.allclose(group.teacher, original([(group.query, group.documents)])[0], atol=1e-5)


def test_teacher_scores_of_another_runtime_are_not_served_from_the_cache(tiny_cross_path, tmp_path):
    """A reduced-precision teacher gives slightly different targets: it must not reuse (or poison) fp32 ones."""
    data = from_pairs([("cancer risk", "cancer risk in patients"), ("seoul city", "seoul is a city")])
    candidates = {q: list(data.corpus) for q in data.queries}
    cache = tmp_path / "scores.sqlite"
    teacher_groups(
        CrossEncoderBackend(tiny_cross_path, cache_size=0), data, candidates, cache=cache, show_progress=False
    )
    onnx = CrossEncoderBackend(tiny_cross_path, cache_size=0, runtime="onnx")
    calls = []
    original = onnx.score_batch
    onnx.score_batch = lambda requests, **kw: calls.append(requests) or original(requests, **kw)
    teacher_groups(onnx, data, candidates, cache=cache, show_progress=False)
    assert len(calls) == 1
    teacher_groups(onnx, data, candidates, cache=cache, show_progress=False)
    assert len(calls) == 1  # its own scores are cached


def test_bad_input_is_refused_with_a_clear_error(tiny_cross_path, tmp_path):
    data = from_pairs([("cancer risk", "cancer risk in patients"), ("seoul city", "seoul is a city")])
    two = {q: list(data.corpus) for q in data.queries}
    with pytest.raises(ValueError, match="the teacher has 2 layers"):
        distill_cross_encoder(tiny_cross_path, data, tmp_path / "s", candidates=two, layers=2)
    with pytest.raises(ValueError, match="between 1 and 1"):
        distill_cross_encoder(tiny_cross_path, data, tmp_path / "s", candidates=two, layers=0)
    with pytest.raises(ValueError, match="no queries"):
        distill_cross_encoder(tiny_cross_path, RetrievalDataset({}, {}, {}), tmp_path / "s", candidates={}, layers=1)
    with pytest.raises(ValueError, match="2 or more candidates"):
        distill_cross_encoder(
            tiny_cross_path, data, tmp_path / "s", candidates={q: docs[:1] for q, docs in two.items()}, layers=1
        )
    with pytest.raises(ValueError, match="nope"):
        distill_cross_encoder(tiny_cross_path, data, tmp_path / "s", candidates={"q1": ["nope", "d1"]}, layers=1)
    long_data = from_pairs([(" ".join(["cancer"] * 200), "cancer risk in patients"), ("seoul city", "seoul")])
    with pytest.raises(ValueError, match=r"1 queries leave fewer than \d+ of max_length=\d+ .* in "):
        distill_cross_encoder(
            tiny_cross_path,
            long_data,
            tmp_path / "s",
            candidates={q: list(long_data.corpus) for q in long_data.queries},
            layers=1,
        )
    with pytest.raises(TypeError, match="FirstStage or a mapping"):
        distill_cross_encoder(tiny_cross_path, data, tmp_path / "s", candidates=["d1"], layers=1)
    with pytest.raises(ValueError, match="label_weight must be >= 0"):
        DistillationConfig(label_weight=-0.5)
    assert not (tmp_path / "s").exists()


def test_the_label_term_teaches_what_the_teacher_does_not_know(tiny_cross_path, tmp_path):
    """An untrained teacher ranks at chance: only the hard-label term can teach the student the topic task."""
    from test_learning import cross_encoder_mrr

    train, train_negatives = topic_data(2000, seed=3)
    check, check_negatives = topic_data(60, seed=4)
    chance = cross_encoder_mrr(tiny_cross_path, check, check_negatives)
    path, _ = distill_cross_encoder(
        tiny_cross_path,
        train,
        tmp_path / "student",
        candidates=candidates_of(train, train_negatives),
        layers=[0],
        config=DistillationConfig(epochs=2, queries_per_batch=8, learning_rate=2e-3, label_weight=4.0),
        show_progress=False,
    )
    learned = cross_encoder_mrr(path, check, check_negatives)
    assert chance < 0.5, f"the untrained teacher already ranks the topic ({chance:.3f}): this proves nothing"
    assert learned >= 0.8 and learned - chance >= 0.3, f"held-out MRR teacher {chance:.3f}, student {learned:.3f}"
    card = json.loads((path / "rerank_plugins_training.json").read_text())
    assert card["distillation"]["loss"] == "listwise KL + 4 x label cross-entropy"


def test_the_student_fusion_weight_is_matched_to_the_teachers_fused_ranking(teacher, tmp_path, caplog):
    """The stored weight makes the student's fused ranking reproduce the teacher's: a student that scores exactly as
    the teacher does gets the teacher's weight, stored with it or tuned on held-out labels; with neither, none."""
    import shutil

    from rerank_plugins.training.distill import record_student_fusion_weight
    from rerank_plugins.training.recipes import record_training_info

    check, negatives = topic_data(30, seed=6)
    rng = np.random.default_rng(0)  # 20 candidates in a random first-stage order: more than a top-10 to compare
    by_query = {
        check.queries[q]: list(rng.permutation([*docs, *rng.choice(sorted(set(check.corpus) - set(docs)), 12)]))
        for q, docs in candidates_of(check, negatives).items()
    }
    stage = ListedCandidates(check.corpus, by_query)
    teacher_backend = CrossEncoderBackend(teacher, cache_size=0)

    def student_like_teacher(name: str) -> Path:
        student = tmp_path / name
        shutil.copytree(teacher, student)  # its training record has no fusion weight
        return student

    stored_teacher = tmp_path / "teacher-with-weight"
    shutil.copytree(teacher, stored_teacher)
    record_training_info(stored_teacher, "fusion", {"weight": 0.6, "first_stage": stage.describe()})
    student = student_like_teacher("unlabelled")
    fusion = record_student_fusion_weight(
        student, CrossEncoderBackend(stored_teacher, cache_size=0), unlabelled(check), stage, depth=20
    )
    assert fusion["weight"] == 0.6 == stored_fusion_weight(student) and fusion["top10_overlap_by_weight"]["0.6"] == 1.0
    assert min(fusion["top10_overlap_by_weight"].values()) < 0.9  # other weights reorder the top 10
    assert fusion["teacher_weight_from"] == "stored with the teacher" and fusion["queries"] == 30
    assert "ndcg@10_by_weight" not in fusion  # no labels needed
    assert "teacher's fused ranking (a = 0.6" in (student / "README.md").read_text()
    assert "another first stage" not in caplog.text  # the teacher's weight was tuned with this first stage

    record_training_info(stored_teacher, "fusion", {"weight": 0.6, "first_stage": {"kind": "AnotherFirstStage"}})
    with caplog.at_level("WARNING"):
        other = record_student_fusion_weight(
            student_like_teacher("other"), CrossEncoderBackend(stored_teacher, cache_size=0), check, stage, depth=20
        )
    assert other["weight"] == 0.6 and "tuned with another first stage" in caplog.text

    student = student_like_teacher("labelled")  # the teacher has no weight: tuned on the held-out labels
    tuned = record_student_fusion_weight(student, teacher_backend, check, stage, depth=20)
    assert tuned["teacher_weight_from"] == "tuned on 30 held-out labelled queries"
    assert tuned["weight"] == tuned["reference_weight"] == stored_fusion_weight(student)
    assert set(tuned["ndcg@10_by_weight"]) == set(tuned["top10_overlap_by_weight"])

    student = student_like_teacher("nothing")
    assert record_student_fusion_weight(student, teacher_backend, unlabelled(check), stage, depth=20) is None
    assert stored_fusion_weight(student) is None
