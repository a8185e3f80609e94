"""The ``score`` command (issue #29's contract): one JSON line per architecture, the objective's value among the
proxies, clear errors for bad input."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "configs" / "archs" / "digits.json"


def test_score_prints_the_objective_and_every_proxy_per_architecture(capsys, tmp_path):
    from lightning_nas.score import main
    from lightning_nas.zc.objectives import DEFAULT_OBJECTIVE, objective_for

    rows = main([str(DIGITS), "--task", "digits"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == rows and len(rows) == 1
    row = rows[0]
    assert row["objective"] == DEFAULT_OBJECTIVE and row["status"] == "ok"
    # the default's proxy (guarded or not: the guard admits the hand-picked network)
    assert row["score"] == row["proxies"][objective_for(DEFAULT_OBJECTIVE).proxy]
    assert row["proxies"]["tcet_mean"] < row["proxies"]["tcet"] and row["grad_norm_at_init"] > 0
    assert row["params"] > 0 and row["macs"] > 0
    again = main([str(DIGITS), str(DIGITS), "--objective", "naswot"])  # same inputs, same numbers
    assert [r["score"] for r in again] == [row["proxies"]["naswot"]] * 2
    (tmp_path / "bad.json").write_text("{bad")
    with pytest.raises(ValueError, match="not valid JSON"):
        main([str(tmp_path / "bad.json")])
    with pytest.raises(FileNotFoundError, match="no such architecture file"):
        main([str(tmp_path / "nowhere.json")])
