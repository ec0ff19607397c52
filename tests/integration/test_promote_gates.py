"""Gated `promote` against a real MLflow server, through the CLI: a better model passes its gates and takes the
alias; a worse one is registered but refused (exit 1, one line per failing check, the alias left where it was),
with the decision, the reason and the numbers in its version's tags; a dry run registers nothing.

Five evaluations in all (80 val images at 64 px each): the strong and the weak model are each evaluated once
as a candidate and once as the current champion, and the dry run has no champion to evaluate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]
NAME = "gated-screen"
CLASS_ROWS = 3  # downscaled_data's classes (scratch, pit, patch): one AP50 row each


def _versions(client: MlflowClient) -> list[str]:
    return sorted(v.version for v in client.search_model_versions(f"name = '{NAME}'"))


def test_gates_accept_the_better_model_and_refuse_the_worse(
    downscaled_data: Path, downscaled_training, weak_training, mlflow_server
) -> None:
    strong, weak, data = downscaled_training.run_id, weak_training.run_id, str(downscaled_data)
    client = MlflowClient(mlflow_server.uri)

    def promote(*args: str) -> subprocess.CompletedProcess:
        command = [*CLI, "promote", *args, "--name", NAME, "--tracking-uri", mlflow_server.uri]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    # Refused in one line before anything is evaluated or registered.
    unknown = promote(strong, "--data", data, "--gate", "recall.dent>=0.9")
    assert unknown.returncode == 2, unknown.stderr[-2000:]
    assert unknown.stderr.strip().splitlines() == [
        "error: --gate 'recall.dent>=0.9': no class 'dent' (classes: "
        + ", ".join(sorted(_classes(downscaled_data)))
        + ")"
    ]
    no_data = promote(strong, "--no-regress", "0.02")
    assert no_data.returncode == 2 and no_data.stderr.strip() == (
        "error: --no-regress: needs --data, the dataset both models are evaluated on"
    )
    with pytest.raises(MlflowException):
        client.get_registered_model(NAME)  # nothing was registered by either

    # The weak model first, as today: no gates, no evaluation.
    first = promote(weak)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"alias:      models:/{NAME}@champion -> version 1" in first.stdout
    assert "pipeline.promotion.decision" not in client.get_model_version(NAME, "1").tags

    # The strong one, gated and compared with the weak champion: accepted, the alias moves.
    up = promote(strong, "--data", data, "--gate", "AP50>=0.05", "--no-regress", "0.02")
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    assert "decision:   accepted (all gates passed)" in up.stdout
    table = _table(up.stdout)
    assert table[0] == ["metric", "candidate", "v1", "change", "verdict"]
    assert [row[0] for row in table[1:3]] == ["ultralytics.mAP50", "ultralytics.mAP50_95"]
    assert table[1][4:] == ["gate", ">=0.05", "passed,", "no-regress", "0.02", "passed"]
    assert len(table) == 1 + 2 + CLASS_ROWS and all(row[0].startswith("AP50.") for row in table[3:])
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert (champion.version, champion.run_id) == ("2", strong)
    tags = champion.tags
    assert tags["pipeline.promotion.decision"] == "accepted"
    assert tags["pipeline.promotion.reason"] == "all gates passed"
    assert tags["pipeline.promotion.compared_with"] == f"models:/{NAME}/1"
    assert (tags["pipeline.promotion.data"], tags["pipeline.promotion.split"]) == (
        str(downscaled_data.resolve()),
        "val",
    )
    assert tags["pipeline.promotion.no_regress"] == "0.02"
    strong_map = float(tags["pipeline.promotion.candidate.ultralytics.mAP50"])
    weak_map = float(tags["pipeline.promotion.current.ultralytics.mAP50"])
    assert strong_map >= 0.05 and strong_map > weak_map + 0.02
    assert tags["pipeline.promotion.gates"] == f"gate AP50>=0.05: {strong_map:.3f} (passed)"
    assert table[1][1:3] == [f"{strong_map:.3f}", f"{weak_map:.3f}"]  # the table shows what the tags record
    assert float(table[1][3]) == pytest.approx(strong_map - weak_map, abs=0.0011)
    assert sum(k.startswith("pipeline.promotion.candidate.AP50.") for k in tags) == CLASS_ROWS

    # The weak one again, against the strong champion: it regresses, so it is registered but refused.
    down = promote(weak, "--data", data, "--no-regress", "0.02")
    assert down.returncode == 1, down.stdout[-2000:] + down.stderr[-2000:]
    refusals = _checks(down.stderr)
    assert refusals and all(line.startswith("no-regress ") and line.endswith(" (refused)") for line in refusals)
    assert refusals[0].startswith(f"no-regress ultralytics.mAP50: {weak_map:.3f} vs current {strong_map:.3f} (")
    assert f"refused:    models:/{NAME}@champion stays on version 2; version 3 is tagged with why" in down.stdout
    assert client.get_model_version_by_alias(NAME, "champion").version == "2"
    refused = client.get_model_version(NAME, "3")
    assert refused.run_id == weak and "champion" not in refused.aliases
    assert refused.tags["pipeline.promotion.decision"] == "refused"
    assert refused.tags["pipeline.promotion.reason"] == "; ".join(line.removesuffix(" (refused)") for line in refusals)
    assert refused.tags["pipeline.promotion.compared_with"] == f"models:/{NAME}/2"
    assert refused.tags["pipeline.promotion.gates"] == "none"
    # The same two models on the same split: the numbers agree with the first comparison's.
    assert float(refused.tags["pipeline.promotion.current.ultralytics.mAP50"]) == pytest.approx(strong_map, abs=1e-4)
    assert float(refused.tags["pipeline.promotion.candidate.ultralytics.mAP50"]) == pytest.approx(weak_map, abs=1e-4)

    # A dry run, to an alias nothing is behind yet: evaluated and decided, nothing registered.
    dry = promote(strong, "--alias", "staging", "--data", data, "--gate", "AP50>=0.99", "--dry-run")
    assert dry.returncode == 1, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert _checks(dry.stderr) == [f"gate AP50>=0.99: {strong_map:.3f} (refused)"]
    assert f"no model behind models:/{NAME}@staging yet: nothing to compare with" in dry.stdout
    assert f"dry run:    run {strong} " in dry.stdout and "would be refused; nothing registered" in dry.stdout
    assert _versions(client) == ["1", "2", "3"]
    assert "staging" not in client.get_registered_model(NAME).aliases


def _classes(data_yaml: Path) -> list[str]:
    from pipeline.data.dataset import read_data_yaml

    return list(read_data_yaml(data_yaml).names.values())


def _checks(stderr: str) -> list[str]:
    """The refusal lines (MLflow's own notes on registering share stderr with them)."""
    return [line for line in stderr.splitlines() if line.startswith(("gate ", "no-regress "))]


def _table(stdout: str) -> list[list[str]]:
    """The side-by-side table's lines, split into cells, header first."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["metric", "candidate"])
    rows = []
    for line in lines[start:]:
        if line.startswith(("decision:", "no model behind")):
            break
        rows.append(line.split())
    return rows


def test_a_false_reject_gate_measures_the_screen_on_good_parts(
    downscaled_data: Path, downscaled_training, good_parts: Path, mlflow_server, tmp_path: Path
) -> None:
    """`--gate false_reject<=R`: the share of good images the candidate's screen rejects, measured on --good at the
    screen's thresholds: a screen at the score floor is refused, one that passes good parts is accepted."""
    from pipeline.inference.screen import Screen

    strong, data = downscaled_training.run_id, str(downscaled_data)

    def promote(screen: Path, *args: str) -> subprocess.CompletedProcess:
        command = [*CLI, "promote", strong, "--name", f"{NAME}-screened", "--alias", "line", "--data", data]
        command += ["--screen", str(screen), "--tracking-uri", mlflow_server.uri, "--dry-run", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    def screen_at(threshold: float) -> Path:
        made = Screen(dict.fromkeys(_classes(downscaled_data), threshold), "m.pt", data, "val", "2026-12-06T00:00:00")
        return made.write(tmp_path / f"screen-{threshold:g}.json")

    alone = promote(screen_at(0.001), "--good", str(good_parts))  # no false_reject gate for them to serve
    assert alone.returncode == 2 and alone.stderr.strip().splitlines()[-1].startswith("error: --good and --screen:")

    images = len(list(good_parts.iterdir()))
    floor = promote(screen_at(0.001), "--gate", "false_reject<=0.05", "--good", str(good_parts))
    assert floor.returncode == 1, floor.stdout[-2000:] + floor.stderr[-2000:]
    (refusal,) = _checks(floor.stderr)
    rate = float(refusal.split(": ")[1].split()[0])
    assert refusal == f"gate false_reject<=0.05: {rate:.3f} (refused)" and rate > 0.5
    assert round(rate * images) == pytest.approx(rate * images, abs=1e-6)  # a share of the good images
    row = next(r for r in _table(floor.stdout) if r[0] == "screen.false_reject")
    assert row[1] == f"{rate:.3f}"

    passing = promote(screen_at(1.0), "--gate", "false_reject<=0.05", "--good", str(good_parts))
    assert passing.returncode == 0, passing.stdout[-2000:] + passing.stderr[-2000:]
    assert "decision:   accepted (all gates passed)" in passing.stdout
    assert next(r for r in _table(passing.stdout) if r[0] == "screen.false_reject")[1] == "0.000"
