"""The training dataset and loader exactly as a training builds them, outside a training.

`augment preview` draws what comes out of it, and the loader benchmark times it; both must see the
same transforms the trainer applies (mosaic, affine, the configured albumentations block, HSV,
flips, the square's symmetries), so they are built here through ultralytics' own builders from the same arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.training.run import ultralytics_args
from pipeline.training.symmetry import add_symmetry
from pipeline.yolo_env import configure_ultralytics

STOCK = None  # ``augmentations=STOCK``: ultralytics' own default albumentations block and no symmetry step


def training_dataset(
    config: Config, data_yaml: Path, augmentations: list[dict[str, Any]] | None, save_dir: Path
) -> Any:
    """Ultralytics' training dataset (mode ``train``) with ``augmentations`` as its albumentations block
    and the config's symmetry step; ``STOCK``: ultralytics' own block and no symmetry step."""
    configure_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    args = ultralytics_args(config, config.model.weights, data_yaml, save_dir, "cpu", augmentations or [])
    if augmentations is STOCK:
        args.pop("augmentations")
    cfg = get_cfg(overrides=args)
    data = check_det_dataset(str(data_yaml), autodownload=False)
    dataset = build_yolo_dataset(cfg, data["train"], config.train.batch, data, mode="train", stride=32)
    if augmentations is STOCK:
        return dataset
    return add_symmetry(dataset, config.augment.symmetry, cfg)  # as the trainer's build_dataset does


def training_loader(dataset: Any, batch: int, workers: int, seed: int = 0) -> Any:
    """Ultralytics' training DataLoader (shuffled, its collate function) over ``dataset``."""
    from ultralytics.data import build_dataloader
    from ultralytics.utils.torch_utils import init_seeds

    init_seeds(seed)
    return build_dataloader(dataset, batch, workers, shuffle=True, rank=-1, pin_memory=False, device="cpu")


def albumentations_block(dataset: Any) -> Any:
    """The Albumentations step inside a training dataset's transforms (to check what really runs)."""
    from ultralytics.data.augment import Albumentations

    found = [t for t in dataset.transforms.transforms if isinstance(t, Albumentations)]
    if len(found) != 1:
        raise RuntimeError(f"expected one albumentations step in the training transforms, found {len(found)}")
    return found[0]
