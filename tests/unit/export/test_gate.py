"""The INT8 accuracy gate's rule on hand-made measurements: a line per class whose recall falls too far, and one for
mAP50; classes without objects are not judged."""

from __future__ import annotations

from pipeline.export.gate import GateResult, Measured, gate


def _measured(map50: float, **recall: float | None) -> Measured:
    return Measured(map50, recall, {name: (0 if value is None else 10) for name, value in recall.items()}, 20)


def _gate(fp32: Measured, int8: Measured) -> GateResult:
    return gate(fp32, int8, split="val", data="d.yaml", max_recall_drop=0.02, max_map50_drop=0.01)


def test_within_the_limits_it_passes() -> None:
    result = _gate(_measured(0.80, pit=0.9, scratch=0.7), _measured(0.795, pit=0.88, scratch=0.71))
    assert result.passed and result.failures == []
    assert result.to_dict()["passed"] is True


def test_a_line_for_each_class_that_drops_too_far_and_for_map50() -> None:
    result = _gate(_measured(0.80, pit=0.9, scratch=0.7, patch=0.5), _measured(0.70, pit=0.85, scratch=0.7, patch=0.4))
    assert not result.passed
    assert len(result.failures) == 3
    assert result.failures[0].startswith("class pit: INT8 recall 0.850 against FP32 0.900 on val (a drop of 0.050")
    assert result.failures[1].startswith("class patch: INT8 recall 0.400 against FP32 0.500")
    assert result.failures[2].startswith("mAP50: INT8 0.700 against FP32 0.800 on val (a drop of 0.100, more than 0.01")


def test_exactly_at_the_limit_passes_and_a_class_without_objects_is_not_judged() -> None:
    result = _gate(_measured(0.5, pit=0.9, hole=None), _measured(0.49, pit=0.88, hole=None))
    assert result.passed
    rows = result.table()
    assert rows[0].split() == ["class", "objects", "FP32", "recall", "INT8", "recall", "drop"]
    assert rows[2].split() == ["hole", "0", "-", "-", "-"]
    assert rows[-1].split()[0] == "mAP50"
