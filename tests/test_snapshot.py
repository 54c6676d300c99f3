"""The refactoring check: canonical traces compared across code versions."""
import json

from slowfast.commands import snapshot


def test_snapshot_finds_no_difference_in_the_same_code_and_names_a_changed_trace(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(snapshot, "CONFIGS", snapshot.CONFIGS[:1])
    monkeypatch.setattr(snapshot, "DREAM_CONFIGS", snapshot.DREAM_CONFIGS[:1])
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert snapshot.main([str(first)]) == 0
    saved = json.loads(first.read_text())
    assert len(saved) == 4  # one configuration on each of the four models
    trace = json.loads(saved[next(iter(saved))])
    assert "ms" not in json.dumps(trace["records"][0]) and "seconds" not in trace["summary"]
    assert snapshot.main([str(second), "--against", str(first)]) == 0  # decoding is deterministic
    assert "0 of 4 configurations differ" in capsys.readouterr().out
    key = next(iter(saved))
    saved[key] = saved[key].replace('"nfe": ', '"nfe": 1', 1)
    first.write_text(json.dumps(saved))
    assert snapshot.main([str(second), "--against", str(first)]) == 1
    assert f"differs: {key}" in capsys.readouterr().out
