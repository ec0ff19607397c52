"""The comparison: clean folders stay quiet, shifted ones alarm on the right check, and the review queue puts the
unlike images first. Synthetic parts (textured grey images), detections and embeddings, all seeded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.drift import (
    Baseline,
    Collector,
    Sample,
    compare,
    holm,
    image_statistics,
    mmd_test,
    rank_atypical,
)
from pipeline.drift.report import format_p

THRESHOLDS = {"scratch": 0.3, "dent": 0.4, "default": 0.25}
DIM = 32
CONSTANT = ("red_green", "blue_green", "width", "height")  # grey parts of one size


def _image(rng: np.random.Generator, gain: float = 1.0, blur: float = 0.0) -> np.ndarray:
    """A textured grey part: smooth shading, a per-image exposure, sensor noise."""
    shading = cv2.resize(rng.normal(110, 20, (6, 6)).astype(np.float32), (48, 48), interpolation=cv2.INTER_CUBIC)
    grey = shading * rng.normal(1, 0.05) + rng.normal(0, 5, (48, 48))
    image = cv2.cvtColor(np.clip(grey * gain, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return cv2.GaussianBlur(image, (0, 0), blur) if blur else image


def _detections(rng: np.random.Generator, scratch: float) -> list[dict[str, object]]:
    found: list[dict[str, object]] = [{"class": "scratch", "score": rng.uniform(0.05, 0.29)}]  # below its threshold
    if rng.random() < scratch:
        found.append({"class": "scratch", "score": rng.uniform(0.3, 1.0)})
    if rng.random() < 0.10:
        found.append({"class": "dent", "score": rng.beta(5, 2) * 0.6 + 0.4})
    return found


def _collect(
    seed: int,
    images: int,
    *,
    gain: float = 1.0,
    blur: float = 0.0,
    scratch: float = 0.03,
    shift: float = 0.0,
    sample: int = 200,
) -> Sample:
    rng = np.random.default_rng(seed)
    collector = Collector(THRESHOLDS, embedding_sample=sample, seed=seed)
    for _ in range(images):
        collector.add(image_statistics(_image(rng, gain, blur)), _detections(rng, scratch), rng.normal(shift, 1.0, DIM))
    return collector.sample()


@cache
def _baseline() -> Baseline:
    return Baseline(sample=_collect(1000, 500), model_sha256="f" * 64, data="parts.yaml", split="val")


def test_clean_folders_do_not_alarm() -> None:
    """20 folders of 200 images from the baseline's own distribution: the family-wise false-alarm rate is
    held at alpha (5%), so at most 2 of them alarm, and no check alarms twice."""
    alarms: Counter[str] = Counter()
    drifted_folders = 0
    for seed in range(20):
        report = compare(_baseline(), _collect(seed, 200), permutations=500)
        # 7 statistics (grey 48-px parts: colour and size one value, not tested), 2 rates, dent's scores, MMD, atypical
        # share, neighbours; scratch's scores when 3% of 200 reach 10
        assert {c.name for c in report.skipped} - {"score.scratch"} == set(CONSTANT) and len(report.checks) == 14
        assert all(report.check(name).skipped == "one value on both sides" for name in CONSTANT)
        drifted_folders += report.drifted
        alarms.update(check.name for check in report.checks if check.drifted)
        if not report.drifted:
            skipped = "; 1 skipped (too few samples)" if "score.scratch" in {c.name for c in report.skipped} else ""
            assert report.line() == f"drift: none of {len(report.ran)} checks (Holm, alpha 0.05) on 200 images{skipped}"
    assert drifted_folders <= 2, alarms
    assert all(count <= 1 for count in alarms.values()), alarms


def test_brighter_images_alarm_on_brightness() -> None:
    report = compare(_baseline(), _collect(1, 200, gain=1.3))
    brightness = report.check("brightness")
    assert brightness.drifted and brightness.p_holm < 1e-6
    assert brightness.current / brightness.baseline == pytest.approx(1.3, rel=0.05)
    assert not report.check("embeddings").drifted and not report.check("rate.scratch").drifted
    line = report.line()
    assert re.search(r"brightness 1\d\d -> 1\d\d \(p<1e-6\)", line), line
    assert line.startswith("drift: ") and ": the images are not like the calibration split (val); 1 skipped" in line


def test_blurred_images_alarm_on_sharpness() -> None:
    report = compare(_baseline(), _collect(2, 200, blur=2.0))
    assert report.check("sharpness").drifted
    assert report.check("sharpness").current < report.check("sharpness").baseline / 10
    assert not report.check("brightness").drifted
    assert report.line().startswith("drift: sharpness ")


def test_a_class_failing_more_often_alarms_on_its_rate() -> None:
    report = compare(_baseline(), _collect(3, 200, scratch=0.25))
    rate = report.check("rate.scratch")
    assert rate.drifted and rate.test == "fisher"
    assert rate.baseline == pytest.approx(0.03, abs=0.015) and rate.current == pytest.approx(0.25, abs=0.05)
    assert [c.name for c in report.checks if c.drifted] == ["rate.scratch"]
    assert re.search(r"scratch fail rate \d(\.\d)?% -> 2\d% \(p<1e-\d\)", report.line()), report.line()


def test_shifted_embeddings_alarm_on_the_mmd_test() -> None:
    report = compare(_baseline(), _collect(4, 200, shift=0.3))
    embeddings = report.check("embeddings")
    assert embeddings.drifted and embeddings.test == "mmd" and embeddings.p < 0.005
    assert {c.name for c in report.checks if c.drifted} <= {"embeddings", "atypical"}  # the network's view only
    assert "embeddings MMD p" in report.line()


def test_a_fifth_of_the_images_from_another_line_alarm_on_the_atypical_share() -> None:
    """160 images like the baseline's and 40 from elsewhere (other embeddings, a little darker): every distribution
    moves by a fifth at most, but a fifth of the images lie beyond the baseline's own most atypical 5%."""
    mixed = Sample.concat([_collect(8, 160), _collect(9, 40, gain=0.9, shift=1.5)])
    report = compare(_baseline(), mixed)
    atypical = report.check("atypical")
    assert atypical.drifted and atypical.test == "fisher" and atypical.p_holm < 1e-4
    assert atypical.baseline == pytest.approx(0.05, abs=0.01) and atypical.current >= 0.2
    assert (atypical.n_baseline, atypical.n_current) == (200, 200)  # the images with embeddings on each side
    assert re.match(r"drift: atypical images 5% -> [23]\d% \(p<1e-\d\)", report.line()), report.line()
    clean = compare(_baseline(), _collect(10, 200)).check("atypical")
    assert not clean.drifted and clean.current <= 0.1


def _like_one_another(seed: int, images: int) -> Sample:
    """Parts from another line: one surface (its brightness and contrast inside the baseline's range, a little
    off its medians), each image only its own sensor noise: alike among themselves, not unlike the baseline's."""
    rng = np.random.default_rng(seed)
    shading = cv2.resize(np.random.default_rng(99).normal(0, 1, (6, 6)).astype(np.float32), (48, 48))
    surface = 104 + (shading - shading.mean()) / shading.std() * 19.5
    collector = Collector(THRESHOLDS, embedding_sample=images, seed=seed)
    for _ in range(images):
        grey = np.clip(surface + rng.normal(0, 5, (48, 48)), 0, 255).astype(np.uint8)
        collector.add(
            image_statistics(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)), _detections(rng, 0.03), rng.normal(0, 1, DIM)
        )
    return collector.sample()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fifth_of_the_images_alike_among_themselves_alarm_on_the_neighbours_check(seed: int) -> None:
    """160 images like the baseline's and 40 of one other surface whose statistics each lie within the baseline's
    range: the 40 are one another's nearest neighbours, which the neighbours check counts."""
    mixed = Sample.concat([_collect(20 + seed, 160), _like_one_another(30 + seed, 40)])
    report = compare(_baseline(), mixed)
    neighbours = report.check("neighbours")
    assert neighbours.drifted and neighbours.test == "knn" and neighbours.p < 0.002  # 1000 permutations: p >= 1/1001
    assert neighbours.current > neighbours.baseline + 0.02
    assert neighbours.baseline == pytest.approx((500 * 499 + 200 * 199) / (700 * 699))  # the same side, by chance
    assert "a group of like images: own-side neighbours 5" in report.line()
    clean = compare(_baseline(), _collect(40 + seed, 200)).check("neighbours")
    assert not clean.drifted and abs(clean.current - clean.baseline) < 0.02


def test_the_report_is_strict_json_with_every_check(tmp_path: Path) -> None:
    report = compare(_baseline(), _collect(5, 200, gain=1.3), model_sha256="0" * 64)
    data = json.loads(report.write(tmp_path / "drift.json").read_text(encoding="utf-8"))
    assert data["drifted"] is True and data["line"] == report.line() and data["correction"] == "holm"
    assert data["baseline"]["split"] == "val" and data["baseline"]["digest"] == _baseline().digest()
    assert data["notes"] == ["the model differs from the baseline's: record the baseline again with calibrate"]
    rows = {row["name"]: row for row in data["checks"]}
    assert set(rows) == {
        "brightness",
        "contrast",
        "sharpness",
        "red_green",
        "blue_green",
        "width",
        "height",
        "score.scratch",
        "score.dent",
        "rate.scratch",
        "rate.dent",
        "embeddings",
        "atypical",
        "neighbours",
    }
    assert rows["score.scratch"]["p"] is None and rows["score.scratch"]["skipped"].startswith("fewer than 10")
    assert rows["brightness"]["p_holm"] >= rows["brightness"]["p"]


def test_too_few_images_are_skipped_and_counted() -> None:
    report = compare(_baseline(), _collect(6, 12))
    assert not report.ran and not report.drifted
    assert report.line() == "drift: none of 0 checks (Holm, alpha 0.05) on 12 images; 14 skipped (too few samples)"


def test_the_most_atypical_images_come_first() -> None:
    rng = np.random.default_rng(7)
    collector = Collector(THRESHOLDS)
    odd = set(rng.choice(200, 20, replace=False).tolist())
    for i in range(200):
        kind = {"gain": 1.3} if i in odd and i % 2 else {"blur": 2.0} if i in odd else {}
        collector.add(image_statistics(_image(rng, **kind)), [], rng.normal(0, 1, DIM), name=f"{i}.png")
    queue = rank_atypical(_baseline(), collector.sample())
    assert {item.index for item in queue[:20]} == odd
    assert queue[0].score > queue[-1].score and queue[0].name == f"{queue[0].index}.png"
    assert any(item.reason.startswith("sharpness") for item in queue[:20])


def test_images_with_unlike_embeddings_come_first() -> None:
    rng = np.random.default_rng(8)
    collector = Collector(THRESHOLDS)
    for i in range(100):
        collector.add(image_statistics(_image(rng)), [], rng.normal(2.0 if i < 10 else 0.0, 1, DIM))
    queue = rank_atypical(_baseline(), collector.sample())
    assert {item.index for item in queue[:10]} == set(range(10))
    assert queue[0].reason == "embedding far from the baseline's"


def test_the_mmd_test_tells_shifted_vectors_from_alike_ones() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(100, 16)), rng.normal(size=(80, 16))
    statistic, p, bandwidth = mmd_test(x, y, seed=0)
    assert p > 0.05 and abs(statistic) < 0.01
    pooled = np.vstack([x, y])
    squared = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    assert bandwidth == pytest.approx(np.median(squared[np.triu_indices(180, 1)]))
    assert mmd_test(x, y, seed=0) == (statistic, p, bandwidth)  # seeded
    _, p_shifted, _ = mmd_test(x, y + 0.5, seed=0)
    assert p_shifted == pytest.approx(1 / 1001)  # all 1000 permutations: a small p always comes from the full run
    # alike: 200 permutations settle it (p > 0.1, which Holm never rejects), a p-value on their grid of 1/201
    assert p > 0.1 and p * 201 == pytest.approx(round(p * 201))


def test_holm_adjusts_and_rejects() -> None:
    rejected, adjusted = holm([0.01, 0.04, 0.03], alpha=0.05)
    assert rejected.tolist() == [True, False, False]
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("seed", range(20))
def test_holm_gives_statsmodels_values(seed: int) -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=12), rng.uniform(0, 0.01, size=rng.integers(0, 5)), [0.5, 0.5]])
    rejected, adjusted = holm(p.tolist(), alpha=0.05)
    want_rejected, want_adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert rejected.tolist() == want_rejected.tolist()
    assert adjusted == pytest.approx(want_adjusted, abs=1e-12)


@pytest.mark.parametrize(
    ("p", "text"), [(3e-5, "p<1e-4"), (1e-4, "p<1e-3"), (1e-12, "p<1e-6"), (0.0123, "p=0.012"), (0.002, "p=0.002")]
)
def test_p_values_read_short(p: float, text: str) -> None:
    assert format_p(p) == text


def test_the_package_needs_no_torch_mlflow_or_ultralytics() -> None:
    code = (
        "import sys, pipeline.drift; "
        "print(sorted(m for m in ('torch', 'mlflow', 'ultralytics', 'statsmodels') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_squared_distances_are_scipys() -> None:
    """The matrix-product distances equal scipy's cdist (which they replace for speed), also for embeddings that
    agree to six digits, and are exactly 0 from a row to itself."""
    from scipy.spatial.distance import cdist

    from pipeline.drift.checks import squared_distances

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (50, 256)).astype(np.float32)
    b = rng.normal(0, 1, (30, 256)).astype(np.float32)
    assert np.allclose(squared_distances(a, b), cdist(a, b, "sqeuclidean"), rtol=1e-9, atol=1e-9)
    close = (1.0 + rng.normal(0, 1e-6, (40, 256))).astype(np.float64)
    assert np.allclose(squared_distances(close, close), cdist(close, close, "sqeuclidean"), rtol=1e-9, atol=0)
    assert np.all(np.diag(squared_distances(a, a)) == 0.0) and squared_distances(a, a).min() >= 0.0
