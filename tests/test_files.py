import json

import pytest

from rerank_plugins._files import write_atomically, write_json


def test_write_json_keeps_non_ascii_text_readable(tmp_path):
    path = tmp_path / "manifest.json"
    write_json(path, {"질문": "한국어", "n": 1})
    assert "한국어" in path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == {"질문": "한국어", "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_write_leaves_the_old_file_and_no_staging_file(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"version": 1})

    def fail_halfway(staging):
        staging.write_text('{"version": ', encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail_halfway)
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]
