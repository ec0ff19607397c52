"""How a config becomes ultralytics' training arguments, and where trainings go."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import build_config
from pipeline.devices import resolve_device
from pipeline.training.run import _new_save_dir, ultralytics_args


def test_config_maps_onto_ultralytics_arguments(tmp_path: Path) -> None:
    config = build_config(
        {
            "model": {"freeze": 10},
            "train": {
                "epochs": 4,
                "imgsz": 96,
                "batch": 8,
                "seed": 7,
                "patience": 0,
                "optimizer": "AdamW",
                "lr0": 0.003,
            },
            "augment": {"mosaic": 0.25, "fliplr": 0.0},
        }
    )
    flip = [{"__version__": "2.0.8", "transform": {"__class_fullname__": "VerticalFlip", "p": 0.5}}]
    args = ultralytics_args(config, "yolo11n.yaml", tmp_path / "data.yaml", tmp_path / "runs" / "exp", "cpu", flip)
    assert args["augmentations"] == flip and "preset" not in args and "albumentations" not in args
    assert args["model"] == "yolo11n.yaml" and args["data"] == str(tmp_path / "data.yaml")
    assert (args["epochs"], args["imgsz"], args["batch"], args["seed"]) == (4, 96, 8, 7)
    assert args["freeze"] == 10 and args["optimizer"] == "AdamW" and args["lr0"] == 0.003
    assert args["patience"] >= 10**9  # 0 means never stop early
    assert args["mosaic"] == 0.25 and args["fliplr"] == 0.0
    assert args["project"] == str(tmp_path / "runs") and args["name"] == "exp" and args["exist_ok"] is True
    assert args["device"] == "cpu" and args["save"] is True and args["val"] is True


def test_the_ultralytics_arguments_are_all_known_to_ultralytics(tmp_path: Path) -> None:
    from ultralytics.cfg import get_cfg

    from pipeline.augment.spec import serialize

    config = build_config({"model": {"freeze": [0, 1]}, "augment": {"preset": "surface"}})
    augmentations = serialize(config.augment)
    args = ultralytics_args(config, "yolo11n.yaml", tmp_path / "data.yaml", tmp_path / "exp", "cpu", augmentations)
    resolved = get_cfg(overrides=args)  # raises on any key ultralytics does not know
    assert resolved.freeze == [0, 1] and len(resolved.augmentations) == 4 and resolved.degrees == 5.0


def test_auto_device_is_cpu_without_cuda() -> None:
    import torch

    assert resolve_device("auto") == ("0" if torch.cuda.is_available() else "cpu")
    assert resolve_device("0,1") == "0,1"


def test_training_folders_are_numbered_not_overwritten(tmp_path: Path) -> None:
    config = build_config({"train": {"project": str(tmp_path / "runs")}, "tracking": {"experiment": "exp"}})
    first, made = _new_save_dir(config)
    assert (first, made) == (tmp_path / "runs" / "exp", True) and first.is_dir()  # made at once: the number is taken
    assert _new_save_dir(config) == (tmp_path / "runs" / "exp-2", True)
    named = build_config({"train": {"project": str(tmp_path / "runs"), "name": "mine", "exist_ok": True}})
    (tmp_path / "runs" / "mine").mkdir()
    assert _new_save_dir(named) == (tmp_path / "runs" / "mine", False)  # reused, held by the training (one at a time)


def test_trainings_started_together_never_share_a_numbered_folder(tmp_path: Path) -> None:
    import threading

    config = build_config({"train": {"project": str(tmp_path / "runs")}, "tracking": {"experiment": "exp"}})
    start, chosen = threading.Barrier(4), []

    def choose() -> None:
        start.wait()
        chosen.append(_new_save_dir(config)[0])

    threads = [threading.Thread(target=choose) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(chosen)) == 4 and all(folder.is_dir() for folder in chosen)
