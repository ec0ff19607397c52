"""pipeline/tracking/spool.py: the write-ahead journal of tracking records."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.tracking.spool import FILES, JOURNAL, STATE, Spool


def test_new_spool_layout_and_state(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert (tmp_path / "spool" / FILES).is_dir()
    assert spool.state == {"run_id": None, "acked": 0}
    assert spool.pending() == []
    assert not Spool.exists(tmp_path / "spool")  # no state.json until something is saved


def test_append_assigns_increasing_seq(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    seqs = [spool.append({"kind": "metrics", "n": i}) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [r["seq"] for r in spool.pending()] == seqs
    assert spool.pending()[2] == {"seq": 3, "kind": "metrics", "n": 2}


def test_journal_has_one_json_line_per_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"kind": "metrics", "metrics": {"x": float("nan")}})
    spool.append({"kind": "tags", "tags": {"a": "b"}})
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1]) == {"seq": 2, "kind": "tags", "tags": {"a": "b"}}


def test_records_by_kind(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"kind": "metrics"})
    spool.append({"kind": "tags"})
    spool.append({"kind": "metrics"})
    assert [r["seq"] for r in spool.records("metrics")] == [1, 3]
    assert len(spool.records()) == 3


def test_acknowledge_removes_pending_and_spooled_files(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("hello")
    spool = Spool(tmp_path / "spool")
    first = spool.append({"kind": "artifact"}, files={"local": source})
    second = spool.append({"kind": "artifact"}, files={"local": source})
    third = spool.append({"kind": "metrics"})
    copies = [spool.path(r["local"]) for r in spool.pending()[:2]]
    assert all(copy.is_file() for copy in copies)

    spool.acknowledge(second)
    assert [r["seq"] for r in spool.pending()] == [third]
    assert not copies[0].exists() and not copies[1].exists()
    assert spool.state["acked"] == second
    assert json.loads((tmp_path / "spool" / STATE).read_text())["acked"] == second
    assert source.read_text() == "hello"  # the original is untouched
    assert first < second < third

    spool.acknowledge(third)
    assert spool.pending() == []


def test_acknowledge_never_goes_backwards(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for _ in range(3):
        spool.append({"kind": "metrics"})
    spool.acknowledge(3)
    spool.acknowledge(1)
    assert spool.state["acked"] == 3
    assert spool.pending() == []


def test_acknowledge_removes_spooled_folders(tmp_path: Path) -> None:
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png")
    spool = Spool(tmp_path / "spool")
    seq = spool.append({"kind": "artifact"}, files={"local": folder})
    copy = spool.path(spool.pending()[0]["local"])
    assert (copy / "a.png").read_bytes() == b"png"
    spool.acknowledge(seq)
    assert not copy.exists()
    assert folder.is_dir()


def test_reopen_keeps_state_pending_and_sequence(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(4):
        spool.append({"kind": "metrics", "i": i})
    spool.update_state(run_id="abc", uri="sqlite:///x.db")
    spool.acknowledge(2)

    again = Spool(tmp_path)
    assert Spool.exists(tmp_path)
    assert again.state == {"run_id": "abc", "acked": 2, "uri": "sqlite:///x.db"}
    assert [r["i"] for r in again.pending()] == [2, 3]
    assert again.append({"kind": "metrics", "i": 4}) == 5
    assert [r["seq"] for r in again.pending()] == [3, 4, 5]
    assert len(again.records()) == 5


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"kind": "metrics", "i": 0})
    spool.append({"kind": "metrics", "i": 1})
    with open(tmp_path / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write('{"seq": 3, "kind": "metr')  # killed mid-write

    again = Spool(tmp_path)
    assert [r["seq"] for r in again.pending()] == [1, 2]
    assert again.append({"kind": "metrics", "i": 2}) == 3


def test_records_appended_after_a_torn_line_survive_the_next_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"kind": "metrics", "i": 0})
    with open(tmp_path / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write('{"seq": 2, "kind": "metr')  # killed mid-write

    resumed = Spool(tmp_path)
    resumed.append({"kind": "metrics", "i": 1})
    resumed.append({"kind": "metrics", "i": 2})

    assert [r["seq"] for r in Spool(tmp_path).pending()] == [1, 2, 3]


def test_files_are_copied_not_linked(tmp_path: Path) -> None:
    source = tmp_path / "last.pt"
    source.write_bytes(b"epoch 1")
    spool = Spool(tmp_path / "spool")
    seq = spool.append({"kind": "model"}, files={"weights": source})
    record = spool.pending()[0]
    assert record["weights"] == f"{FILES}/{seq:08d}-last.pt"

    source.write_bytes(b"epoch 2")
    assert spool.path(record["weights"]).read_bytes() == b"epoch 1"
    source.unlink()
    assert spool.path(record["weights"]).read_bytes() == b"epoch 1"


def test_same_file_twice_gets_two_copies(tmp_path: Path) -> None:
    source = tmp_path / "results.csv"
    source.write_text("1")
    spool = Spool(tmp_path / "spool")
    spool.append({"kind": "artifact"}, files={"local": source})
    source.write_text("2")
    spool.append({"kind": "artifact"}, files={"local": source})
    first, second = (spool.path(r["local"]) for r in spool.pending())
    assert first != second
    assert (first.read_text(), second.read_text()) == ("1", "2")
