"""Augmentation: the named presets, the albumentations block a config declares, faster OpenCV versions
of some of its transforms. The preview grid (`augment preview`) is `pipeline.training.augment_preview`: it draws
the training dataset itself, so it builds on train, which builds on this package.

Nothing is re-exported here: `pipeline.config` reads `pipeline.augment.presets`, and `spec` reads the
config, so importing `spec` from this file would be a cycle.
"""
