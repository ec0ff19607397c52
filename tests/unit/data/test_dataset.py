"""pipeline/data/dataset.py: finding, validating, pinning and hashing a YOLO-layout dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.data.dataset import DatasetError, content_hash, resolve_dataset
from pipeline.data.synth import synthesize


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only 20-image synthetic set (16 train, 4 val); tests that change files copy it first."""
    return synthesize(tmp_path_factory.mktemp("ds") / "defects", images=20, seed=1, size=32).out


@pytest.fixture
def own_copy(synth_set: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synth_set, tmp_path / "copy"))


def dataset_error(path: str | Path, out_dir: Path) -> str:
    with pytest.raises(DatasetError) as info:
        resolve_dataset(path, out_dir)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_yaml(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


# ---- resolving ----------------------------------------------------------------------------------


def test_resolve_folder_writes_absolute_yaml(synth_set: Path, tmp_path: Path) -> None:
    dataset = resolve_dataset(synth_set, tmp_path / "train1")
    assert dataset.data_yaml == tmp_path / "train1" / "data.yaml"
    spec = yaml.safe_load(dataset.data_yaml.read_text())
    assert Path(spec["train"]).is_absolute() and Path(spec["val"]).is_absolute()
    assert Path(spec["train"]) == (synth_set / "images" / "train").resolve()
    assert Path(spec["val"]) == (synth_set / "images" / "val").resolve()
    assert Path(spec["path"]) == synth_set.resolve()
    assert spec["names"] == {0: "scratch", 1: "pit", 2: "patch"}
    assert "test" not in spec


def test_resolve_returns_description(synth_set: Path, tmp_path: Path) -> None:
    dataset = resolve_dataset(synth_set / "data.yaml", tmp_path / "out")
    assert dataset.name == "defects"
    assert dataset.images == {"train": 16, "val": 4}
    assert dataset.names == {0: "scratch", 1: "pit", 2: "patch"}
    assert set(dataset.splits) == {"train", "val"}
    assert len(dataset.content_hash) == 64


def test_explicit_name_wins(synth_set: Path, tmp_path: Path) -> None:
    assert resolve_dataset(synth_set, tmp_path / "out", name="neu").name == "neu"


def test_relative_path_from_working_folder(synth_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(synth_set.parent)
    dataset = resolve_dataset("defects", tmp_path / "out")
    assert dataset.images == {"train": 16, "val": 4}


def test_path_dot_resolves_against_the_yaml_folder(
    own_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NEU-DET style: `path: .` with splits relative to it, wherever the working folder is."""
    write_yaml(
        own_copy / "data.yaml",
        {"path": ".", "train": "images/train", "val": "images/val", "names": ["scratch", "pit", "patch"]},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    dataset = resolve_dataset(own_copy / "data.yaml", tmp_path / "out")
    assert dataset.splits["train"] == (own_copy / "images" / "train").resolve()
    assert dataset.splits["val"] == (own_copy / "images" / "val").resolve()
    assert dataset.names == {0: "scratch", 1: "pit", 2: "patch"}
    assert Path(yaml.safe_load(dataset.data_yaml.read_text())["path"]) == own_copy.resolve()


def test_relative_path_key(own_copy: Path, tmp_path: Path) -> None:
    moved = own_copy / "inner"
    moved.mkdir()
    shutil.move(own_copy / "images", moved / "images")
    shutil.move(own_copy / "labels", moved / "labels")
    write_yaml(own_copy / "data.yaml", {"path": "inner", "train": "images/train", "val": "images/val", "names": ["a"]})
    dataset = resolve_dataset(own_copy, tmp_path / "out")
    assert dataset.splits["val"] == (moved / "images" / "val").resolve()


def test_absolute_split_paths(synth_set: Path, tmp_path: Path) -> None:
    folder = tmp_path / "meta"
    folder.mkdir()
    write_yaml(
        folder / "data.yaml",
        {"train": str(synth_set / "images" / "train"), "val": str(synth_set / "images" / "val"), "names": {0: "x"}},
    )
    dataset = resolve_dataset(folder, tmp_path / "out")
    assert dataset.images == {"train": 16, "val": 4}
    assert dataset.names == {0: "x"}


def test_optional_test_split(own_copy: Path, tmp_path: Path) -> None:
    shutil.copytree(own_copy / "images" / "val", own_copy / "images" / "test")
    spec = yaml.safe_load((own_copy / "data.yaml").read_text())
    write_yaml(own_copy / "data.yaml", {**spec, "test": "images/test"})
    dataset = resolve_dataset(own_copy, tmp_path / "out")
    assert dataset.images == {"train": 16, "val": 4, "test": 4}
    assert "test" in yaml.safe_load(dataset.data_yaml.read_text())


def test_names_as_list(own_copy: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load((own_copy / "data.yaml").read_text())
    write_yaml(own_copy / "data.yaml", {**spec, "names": ["crazing", "inclusion"]})
    assert resolve_dataset(own_copy, tmp_path / "out").names == {0: "crazing", 1: "inclusion"}


# ---- content hash -------------------------------------------------------------------------------


def test_hash_is_stable(synth_set: Path, tmp_path: Path) -> None:
    first = resolve_dataset(synth_set, tmp_path / "a").content_hash
    second = resolve_dataset(synth_set, tmp_path / "b").content_hash
    assert first == second


def test_hash_ignores_the_folder_name(synth_set: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(synth_set, tmp_path / "somewhere" / "renamed"))
    assert resolve_dataset(copy, tmp_path / "a").content_hash == resolve_dataset(synth_set, tmp_path / "b").content_hash


def test_hash_changes_with_one_label(synth_set: Path, own_copy: Path, tmp_path: Path) -> None:
    label = sorted((own_copy / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert (
        resolve_dataset(own_copy, tmp_path / "a").content_hash
        != resolve_dataset(synth_set, tmp_path / "b").content_hash
    )


def test_hash_changes_with_one_image(synth_set: Path, own_copy: Path, tmp_path: Path) -> None:
    image = sorted((own_copy / "images" / "train").glob("*.png"))[0]
    image.write_bytes(image.read_bytes() + b"\0")
    assert (
        resolve_dataset(own_copy, tmp_path / "a").content_hash
        != resolve_dataset(synth_set, tmp_path / "b").content_hash
    )


def test_hash_changes_when_a_label_disappears(synth_set: Path, own_copy: Path, tmp_path: Path) -> None:
    sorted((own_copy / "labels" / "train").glob("*.txt"))[0].unlink()
    assert (
        resolve_dataset(own_copy, tmp_path / "a").content_hash
        != resolve_dataset(synth_set, tmp_path / "b").content_hash
    )


def test_hash_covers_split_membership(synth_set: Path) -> None:
    splits = {"train": synth_set / "images" / "train", "val": synth_set / "images" / "val"}
    swapped = {"train": splits["val"], "val": splits["train"]}
    assert content_hash(splits) != content_hash(swapped)


# ---- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "   "])
def test_empty_path(path: str, tmp_path: Path) -> None:
    assert dataset_error(path, tmp_path / "out") == "data.path: empty; give a data.yaml or a folder in YOLO layout"


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    assert dataset_error(missing, tmp_path / "out") == f"data.path: {missing}: no such file or folder"


def test_folder_without_data_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    (folder / "images" / "train").mkdir(parents=True)
    assert dataset_error(folder, tmp_path / "out") == (
        f"data.path: {folder}: folder has no data.yaml (class names are needed)"
    )


def test_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text("{}")
    assert dataset_error(path, tmp_path / "out") == f"data.path: {path}: expected a data.yaml or a dataset folder"


def test_missing_val_folder(own_copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(own_copy / "images" / "val")
    source = own_copy.resolve() / "data.yaml"
    assert dataset_error(own_copy, tmp_path / "out") == (
        f"{source}: val: folder {own_copy.resolve() / 'images' / 'val'} does not exist"
    )


def test_missing_val_key(own_copy: Path, tmp_path: Path) -> None:
    write_yaml(own_copy / "data.yaml", {"train": "images/train", "names": ["a"]})
    message = dataset_error(own_copy, tmp_path / "out")
    assert message == f"{own_copy.resolve() / 'data.yaml'}: val: missing (a training needs train and val splits)"


@pytest.mark.parametrize("names", [None, [], {}])
def test_names_missing(own_copy: Path, tmp_path: Path, names: object) -> None:
    spec = {"train": "images/train", "val": "images/val"}
    if names is not None:
        spec["names"] = names
    write_yaml(own_copy / "data.yaml", spec)
    assert dataset_error(own_copy, tmp_path / "out") == (
        f"{own_copy.resolve() / 'data.yaml'}: names: expected a list or mapping of class names"
    )


def test_names_with_non_integer_ids(own_copy: Path, tmp_path: Path) -> None:
    write_yaml(own_copy / "data.yaml", {"train": "images/train", "val": "images/val", "names": {"a": "x"}})
    assert (
        dataset_error(own_copy, tmp_path / "out")
        == f"{own_copy.resolve() / 'data.yaml'}: names: class ids must be integers"
    )


def test_empty_split_folder(own_copy: Path, tmp_path: Path) -> None:
    for image in (own_copy / "images" / "val").iterdir():
        image.unlink()
    val = own_copy.resolve() / "images" / "val"
    assert dataset_error(own_copy, tmp_path / "out") == f"{own_copy.resolve() / 'data.yaml'}: val: no images in {val}"


def test_split_as_a_list(own_copy: Path, tmp_path: Path) -> None:
    write_yaml(own_copy / "data.yaml", {"train": ["images/train"], "val": "images/val", "names": ["a"]})
    assert dataset_error(own_copy, tmp_path / "out") == (
        f"{own_copy.resolve() / 'data.yaml'}: train: expected one folder path (lists are not supported)"
    )


def test_invalid_yaml(own_copy: Path, tmp_path: Path) -> None:
    (own_copy / "data.yaml").write_text("train: images/train\nval: [\n")
    message = dataset_error(own_copy, tmp_path / "out")
    assert message.startswith(f"{own_copy.resolve() / 'data.yaml'}:")
    assert " line " in message
    assert message.endswith(": invalid YAML")


def test_top_level_not_a_mapping(own_copy: Path, tmp_path: Path) -> None:
    (own_copy / "data.yaml").write_text("- images/train\n")
    assert dataset_error(own_copy, tmp_path / "out") == (
        f"{own_copy.resolve() / 'data.yaml'}: expected a mapping with train, val and names"
    )


def test_no_output_written_on_error(tmp_path: Path) -> None:
    dataset_error(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
