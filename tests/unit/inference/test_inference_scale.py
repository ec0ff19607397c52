"""The size predict runs the network at: tiles at the scale the model learned, and one line when a choice changes it."""

from __future__ import annotations

from pipeline.inference.scale import TileChoice, inference_scale


def test_tiles_run_at_the_scale_the_model_learned() -> None:
    # Trained at 320 px on 640-px images: objects at half their size; a 320-px tile must run at 160 px.
    scale = inference_scale(asked=0, tile=320, trained=320, side=640)
    assert scale.size == 160
    assert scale.line == (
        "320-px tiles run at 160 px: the scale the model learned, 0.50x (trained at 320 px on images of 640 px); "
        "--imgsz overrides"
    )
    assert inference_scale(0, 1000, 640, 640).size == 1000  # trained at full size: tiles at full size
    assert inference_scale(0, 64, 64, 2000).size == 32  # never under one stride's worth of network


def test_an_imgsz_that_changes_the_scale_is_said_once() -> None:
    changed = inference_scale(asked=320, tile=320, trained=320, side=640)
    assert changed.size == 320
    assert changed.line == (
        "--imgsz 320: 320-px tiles run at 1.00x, not the 0.50x the model learned (trained at 320 px on images of "
        "640 px); objects look 2.00x as large as in training"
    )
    kept = inference_scale(asked=160, tile=320, trained=320, side=640)
    assert (kept.size, kept.line) == (
        160,
        "320-px tiles run at 160 px: the scale the model learned (trained at 320 px on images of 640 px)",
    )
    smaller = inference_scale(asked=64, tile=320, trained=320, side=640)
    assert smaller.line.endswith("objects look 2.50x smaller than in training")


def test_a_model_without_a_recorded_image_size_runs_tiles_at_its_training_size_and_says_why() -> None:
    scale = inference_scale(asked=0, tile=320, trained=320, side=None)
    assert scale.size == 320
    assert "records no training image size, so the scale it learned is unknown" in scale.line
    assert (
        inference_scale(asked=96, tile=320, trained=320, side=None).line
        == "320-px tiles run at 96 px (0.30x), as --imgsz asks"
    )


def test_whole_images_at_the_training_size_say_nothing_unless_they_differ_from_the_training_images() -> None:
    assert inference_scale(0, 0, 320, 640, first_side=640) == inference_scale(0, 0, 320, 640)
    assert inference_scale(0, 0, 320, 640, first_side=640).line == ""
    assert inference_scale(0, 0, 320, 640, first_side=800).line == ""  # 1.25x off: not worth a line
    assert inference_scale(0, 0, 320, None, first_side=4000).line == ""  # nothing known to compare with
    big = inference_scale(0, 0, 320, 640, first_side=2560)
    assert big.size == 320
    assert big.line == (
        "images of 2560 px (the first one) run at 320 px, 0.12x: objects look 4.00x smaller than in training "
        "(trained at 320 px on images of 640 px); --imgsz 1280 or --tile 640 keeps the scale"
    )
    asked = inference_scale(640, 0, 320, 640, first_side=640)
    assert asked.size == 640 and asked.line.startswith(
        "--imgsz 640: images of 640 px (the first one) run at 640 px, 1.00x"
    )
    assert inference_scale(1280, 0, 320, 640, first_side=2560).line == ""  # the asked size keeps the scale


def test_a_tile_trained_model_is_tiled_as_trained_unless_asked_otherwise() -> None:
    from pipeline.inference.scale import tile_choice

    assert tile_choice(None, None, (640, 0.25)) == TileChoice(
        640, 0.25, "640-px tiles (overlap 0.25), as the model was trained (data.tile); --tile 0: whole images"
    )
    assert tile_choice(None, 0.1, (640, 0.25)).overlap == 0.1  # --overlap alone keeps the training's tiles
    assert tile_choice(0, None, (640, 0.25)) == TileChoice(0, 0.2, "")  # --tile 0: whole images, said by the user
    assert tile_choice(320, None, (640, 0.25)) == TileChoice(320, 0.2, "")  # --tile decides
    assert tile_choice(None, None, None) == TileChoice(0, 0.2, "")  # trained on whole images: whole images


def test_images_no_larger_than_the_tile_run_whole_at_the_training_size() -> None:
    # NEU-DET's 200-px images under 224-px tiles are not cut: they run at 224 px as whole images, not at the
    # 251 px a full 224-px tile would take at the learned 1.12x
    assert inference_scale(0, 224, 224, 200, 200) == inference_scale(0, 0, 224, 200, 200)
    assert inference_scale(0, 224, 224, 200, 200).size == 224
    assert inference_scale(0, 224, 224, 200, 1000).size == 251  # a large image is cut: its tiles at the scale
