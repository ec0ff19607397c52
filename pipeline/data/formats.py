"""The dataset formats `data import` reads: one list, read by the importer, the command line and manifests.

A new format is added here and given a reader in `pipeline.data.importer.read_source`."""

from __future__ import annotations

FORMATS = ("yolo", "coco", "voc", "labelstudio")
CHOICES = ("auto", *FORMATS)  # what a user may name: auto detects the format from the source
