"""`data import --classes`: the class list it takes, and the manifest's path (renumbering) it reuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.dataset import DatasetError
from pipeline.data.importer import import_dataset, parse_classes
from pipeline.data.yolo import read_yolo


def test_names_are_split_on_commas_and_trimmed() -> None:
    assert parse_classes("scratch, pit ,patch") == ["scratch", "pit", "patch"]
    assert parse_classes("pin-hole") == ["pin-hole"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,,b", "--classes: 'a,,b': an empty class name; expected names separated by commas"),
        ("a,b,", "--classes: 'a,b,': an empty class name"),
        ("a,b,a,b", "--classes: a, b given twice"),
    ],
)
def test_empty_and_repeated_names_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match="^" + message.replace("(", r"\(")):
        parse_classes(text)


def test_a_yolo_source_is_renumbered_to_the_given_order(synth_data: Path, tmp_path: Path) -> None:
    result = import_dataset(synth_data, "parts", tmp_path / "parts", classes=["patch", "scratch", "pit"])
    assert result.notes[0] == "class ids renumbered to the order of --classes"
    imported, source = read_yolo(result.data_yaml), read_yolo(synth_data)
    assert imported.names == ["patch", "scratch", "pit"]
    by_name = {s.image.stem: sorted(source.names[b.cls] for b in s.boxes) for s in source.samples}
    assert {s.image.stem: sorted(imported.names[b.cls] for b in s.boxes) for s in imported.samples} == by_name


def test_other_names_than_a_yolo_source_has_are_refused_naming_the_option(synth_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"do not match --classes \['scratch', 'pit'\]$"):
        import_dataset(synth_data, "parts", tmp_path / "parts", classes=["scratch", "pit"])
    assert not (tmp_path / "parts").exists()
