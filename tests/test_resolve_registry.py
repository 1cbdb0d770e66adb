"""Model resolution (offline) and the shared registry."""

from __future__ import annotations

import contextlib
import threading

import pytest

from rerank_plugins import ModelNotFoundError, get_bi_encoder, get_cross_encoder, resolve_model_path
from rerank_plugins.models import resolve


def test_local_directory_resolves_to_itself(tiny_bi_path):
    assert resolve_model_path(tiny_bi_path) == tiny_bi_path.resolve()
    assert resolve_model_path(str(tiny_bi_path)) == tiny_bi_path.resolve()


def test_missing_local_path_names_what_was_tried(tmp_path):
    with pytest.raises(ModelNotFoundError, match="local directory"):
        resolve_model_path(tmp_path / "nope")


def test_unknown_hub_id_offline_fails_fast_naming_every_place(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_path("some-org/no-such-model")
    message = str(error.value)
    assert "Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message


def test_packaged_minilm_resolves_offline(monkeypatch, minilm_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    assert resolve_model_path("all-MiniLM-L6-v2") == minilm_path


def test_packaged_copy_not_used_for_a_pinned_revision(monkeypatch, minilm_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_model_path("sentence-transformers/all-MiniLM-L6-v2", revision="0123abcd")


def test_hub_is_tried_last_and_its_failure_reported(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_download(model_id, revision=None, local_files_only=False):
        calls.append(local_files_only)
        raise OSError("unreachable")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    with pytest.raises(ModelNotFoundError, match="Hugging Face Hub \\(OSError: unreachable\\)"):
        resolve.resolve_model_path("some-org/no-such-model")
    assert calls == [True, False]  # cache first, hub last


def test_empty_model_name_is_rejected():
    with pytest.raises(ValueError):
        resolve_model_path("  ")


def test_registry_returns_one_instance_per_model_and_options(tiny_bi_path, tiny_cross_path):
    assert get_bi_encoder(tiny_bi_path) is get_bi_encoder(str(tiny_bi_path))
    assert get_bi_encoder(tiny_bi_path) is not get_bi_encoder(tiny_bi_path, max_length=32)
    assert get_cross_encoder(tiny_cross_path) is get_cross_encoder(tiny_cross_path, device="cpu")
    assert get_cross_encoder(tiny_cross_path) is not get_bi_encoder(tiny_cross_path)


def test_registry_is_lazy(tiny_cross_path):
    backend = get_cross_encoder(tiny_cross_path)
    assert not backend.loaded
    backend.score("query", ["document"])
    assert backend.loaded


def test_registry_under_threads_creates_one_instance_and_loads_once(tiny_bi_path):
    found = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        backend = get_bi_encoder(tiny_bi_path)
        backend.encode_queries(["cancer risk"])
        found.append(backend)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in found}) == 1


def test_invalid_runtime_and_max_length(tiny_bi_path):
    with pytest.raises(ValueError, match="runtime"):
        get_bi_encoder(tiny_bi_path, runtime="tensorrt")
    with pytest.raises(ValueError, match="max_length"):
        get_cross_encoder(tiny_bi_path, max_length=0)


def test_thread_setting_applies_to_torch_and_onnx(monkeypatch):
    import torch

    from rerank_plugins import set_num_threads
    from rerank_plugins.models.runtimes.onnx import default_threads

    before = torch.get_num_threads()
    try:
        set_num_threads(1)
        assert torch.get_num_threads() == 1 and default_threads() == 1
        with pytest.raises(ValueError, match="threads"):
            set_num_threads(0)
    finally:
        monkeypatch.delenv("RERANK_PLUGINS_THREADS", raising=False)
        torch.set_num_threads(before)


def test_remote_code_in_a_model_is_not_run_unless_asked(tmp_path, tiny_bi_path, tiny_cross_path):
    import json
    import shutil

    from rerank_plugins import BiEncoderBackend, CrossEncoderBackend

    marker = tmp_path / "code-ran"
    for name, source in (("bi", tiny_bi_path), ("cross", tiny_cross_path)):
        model = tmp_path / name
        shutil.copytree(source, model)
        (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
        config = json.loads((model / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "evil.Evil", "AutoModelForSequenceClassification": "evil.Evil"}
        (model / "config.json").write_text(json.dumps(config))
    for backend in (BiEncoderBackend(tmp_path / "bi"), CrossEncoderBackend(tmp_path / "cross")):
        assert backend.trust_remote_code is False
        with contextlib.suppress(Exception):  # refusing to load is fine; running the code is not
            _ = backend.model  # loading is what could run the code
    assert not marker.exists()
    with contextlib.suppress(Exception):  # control: when asked, the code does run, so the check above can fail
        _ = CrossEncoderBackend(tmp_path / "cross", trust_remote_code=True).model  # (the stub has no model class)
    assert marker.exists()


def test_fingerprint_follows_prompts_pooling_and_dense_layers_not_the_card(tmp_path, tiny_bi_path):
    """The disk embedding cache and the runtime exports are keyed by it: a changed prompt or pooling must not be
    served the old vectors."""
    import shutil

    from rerank_plugins.models.resolve import model_fingerprint

    model = tmp_path / "model"
    shutil.copytree(tiny_bi_path, model)
    seen = {model_fingerprint(model)}
    (model / "README.md").write_text("a new model card")
    assert model_fingerprint(model) in seen  # the card does not change what the model computes
    changes = [
        ("config_sentence_transformers.json", '{"prompts": {"query": "query: "}}'),
        ("modules.json", "[]"),
        ("1_Pooling/config.json", '{"pooling_mode_cls_token": true}'),
        ("2_Dense/config.json", '{"out_features": 8}'),
    ]
    for name, content in changes:
        (model / name).parent.mkdir(exist_ok=True)
        (model / name).write_text(content)
        fingerprint = model_fingerprint(model)
        assert fingerprint not in seen, f"{name} changed and the fingerprint did not"
        seen.add(fingerprint)
