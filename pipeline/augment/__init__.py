"""Augmentation: the named presets, the albumentations block a config declares, faster OpenCV versions
of some of its transforms, and the preview grid.

Nothing is re-exported here: `pipeline.config` reads `pipeline.augment.presets`, and `spec` reads the
config, so importing `spec` from this file would be a cycle.
"""
