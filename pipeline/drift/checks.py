"""The comparison of a run's images with the baseline, and the images most unlike it.

Each input statistic and each class's scores (per image, its top score at the threshold: the many detections of
one part are not independent draws, and tested as such a clean folder alarmed in half the draws on NEU-DET): a
two-sample Kolmogorov-Smirnov test (any change of
shape, not only of the mean, and no assumption about the distribution). Each class's fail rate: Fisher's exact
test, exact where fail counts are small (3% of 200 images is 6, where a chi-square or z approximation is poor) and
never anti-conservative. The embeddings: a kernel two-sample test, the maximum mean discrepancy with a permutation
p-value (Gretton et al. 2012; the test Rabanser et al. 2019, "Failing Loudly", found best for dataset shift),
run by ``scipy.stats.permutation_test``. The share of atypical images: how many of the run's images are more
unlike the baseline than all but ``TAIL`` of the baseline's own (the review queue's score, `_atypicality`), against
that share in the baseline, with Fisher's exact test: a few images from a new camera among good ones. The images
that are one another's nearest neighbours (`_neighbours`, Schilling's test on the input statistics): a fifth of a
folder from another line moves each distribution by at most a fifth, which KS and MMD see late (30-60% of
200-image folders in ``drift_power``), and lies inside the baseline's range, but its images sit together. All the
p-values are corrected together with Holm's method (valid whatever their dependence: brightness and contrast move
together), so that a clean folder alarms with probability at most ``alpha`` however many checks there are; a check
with nothing to test (one value of a statistic on both sides, no fail on either) is left out of the family.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse, stats
from scipy.spatial import cKDTree

from pipeline.drift.baseline import Baseline
from pipeline.drift.report import TOO_FEW, Check, DriftReport
from pipeline.drift.statistics import STATISTICS, Sample, threshold_of

ALPHA = 0.05
MIN_IMAGES = 20  # per side, for a statistic's KS test and a fail rate's test
MIN_SCORES = 10  # per side, for a class's score KS test
MIN_EMBEDDINGS = 20  # per side, for the MMD test
PERMUTATIONS = 1000  # a permutation p-value's resolution is 1/(PERMUTATIONS + 1)
STAGE = 5  # a permutation test runs PERMUTATIONS // STAGE first, and the rest only when its p may matter
SETTLED = 0.1  # a first-stage p-value above this is final: Holm rejects nothing above alpha (0.05)
Z_CAP = 50.0  # one statistic's share of an image's atypicality: a new image size must not hide everything else
TAIL = 0.05  # the baseline's most atypical share: the atypical-share check counts the images beyond it
NEIGHBOURS = 5  # the nearest baseline embeddings an image's distance is measured to
GROUP_NEIGHBOURS = 10  # the nearest images the neighbours check counts, per image (Schilling's k)
LOGGED = ("contrast", "sharpness", "width", "height")  # over orders of magnitude: the neighbours check logs them


def compare(
    baseline: Baseline | Sample,
    current: Sample,
    *,
    alpha: float = ALPHA,
    min_images: int = MIN_IMAGES,
    min_scores: int = MIN_SCORES,
    min_embeddings: int = MIN_EMBEDDINGS,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    model_sha256: str | None = None,
) -> DriftReport:
    """Test ``current`` (a run's images, or one ``--watch`` window) against ``baseline``; Holm at ``alpha``."""
    base = baseline.sample if isinstance(baseline, Baseline) else baseline
    rows: list[Check] = []
    for name in STATISTICS:
        rows.append(_ks(name, base.statistic(name), current.statistic(name), min_images))
    classes = list(dict.fromkeys([*base.classes, *current.classes]))
    for cls in classes:
        before, after = base.top_scores(cls), current.top_scores(cls)  # per image: its detections are not independent
        if len(before) or len(after):
            rows.append(_ks(f"score.{cls}", before, after, min_scores))
    for cls in classes:
        rows.append(_rate(cls, base.flags(cls), current.flags(cls), min_images))
    if len(base.embeddings) or len(current.embeddings):
        rows.append(_embeddings(base.embeddings, current.embeddings, min_embeddings, permutations, seed))
    rows.append(_atypical_share(base, current, min_images))
    rows.append(_neighbours(base, current, min_images, permutations, seed))
    rows = _corrected(rows, alpha)
    return DriftReport(
        checks=rows,
        alpha=alpha,
        images=current.images,
        baseline_images=base.images,
        baseline=_describe(baseline),
        notes=_notes(baseline, base, current, model_sha256),
    )


def _ks(name: str, before: np.ndarray, after: np.ndarray, least: int) -> Check:
    row = Check(name, "ks", _median(before), _median(after), len(before), len(after))
    if min(len(before), len(after)) < least:
        return _skip(row, least)
    if np.ptp(before) == 0 and np.array_equal(np.unique(before), np.unique(after)):
        return _replace(row, skipped="one value on both sides")  # a p of 1 would only weaken the other checks
    result = stats.ks_2samp(before, after)
    return _tested(row, float(result.statistic), float(result.pvalue))


def _rate(cls: str, before: np.ndarray, after: np.ndarray, least: int) -> Check:
    fails = int(before.sum()), int(after.sum())
    row = Check(f"rate.{cls}", "fisher", _mean(before), _mean(after), len(before), len(after))
    if min(len(before), len(after)) < least:
        return _skip(row, least)
    if not any(fails):  # nothing to test; a p of 1 would only weaken the correction of the others
        return _replace(row, skipped="no fail on either side")
    table = [[fails[0], len(before) - fails[0]], [fails[1], len(after) - fails[1]]]
    result = stats.fisher_exact(table)
    return _tested(row, float(result.statistic), float(result.pvalue))


def _embeddings(before: np.ndarray, after: np.ndarray, least: int, permutations: int, seed: int) -> Check:
    row = Check("embeddings", "mmd", None, None, len(before), len(after))
    if min(len(before), len(after)) < least:
        return _skip(row, least)
    if before.shape[1] != after.shape[1]:
        return _replace(row, skipped=f"embeddings of {before.shape[1]} and {after.shape[1]} values: another model")
    statistic, p, _ = mmd_test(before, after, permutations=permutations, seed=seed)
    return _tested(row, statistic, p)


def _atypical_share(base: Sample, current: Sample, least: int, tail: float = TAIL) -> Check:
    """Fisher's exact test (one-sided: more, not fewer) of the share of images beyond the baseline's ``1 - tail``
    quantile of atypicality, the baseline's own images scored as any other but each left out of its neighbours."""
    row = Check("atypical", "fisher", None, None, base.images, current.images)
    if min(base.images, current.images) < least:
        return _skip(row, least)
    within = _within(base.embeddings, NEIGHBOURS)  # the baseline's own neighbour distances, once for both sides
    own = _atypicality(base, base, NEIGHBOURS, itself=True, within=within)[0]
    seen = _atypicality(base, current, NEIGHBOURS, itself=False, within=within)[0]
    if _comparable(base.embeddings, current.embeddings):  # a sample of images has embeddings: score those alone,
        own, seen = own[base.embedding_image], seen[current.embedding_image]  # so every score has the same parts
    if min(len(own), len(seen)) < least:
        return _skip(row, least)
    limit = np.quantile(own, 1 - tail)
    before, after = int((own > limit).sum()), int((seen > limit).sum())
    row = _replace(row, baseline=before / len(own), current=after / len(seen), n_baseline=len(own), n_current=len(seen))
    table = [[after, len(seen) - after], [before, len(own) - before]]
    result = stats.fisher_exact(table, alternative="greater")
    return _tested(row, float(result.statistic), float(result.pvalue))


def _neighbours(base: Sample, current: Sample, least: int, permutations: int, seed: int) -> Check:
    """Schilling's nearest-neighbour two-sample test (Schilling 1986) on the images' input statistics: pooled, how
    often an image's ``GROUP_NEIGHBOURS`` nearest images come from its own side, against relabelled pools
    (``scipy.stats.permutation_test``). Images from another line that look alike among themselves but not
    unlike the baseline's images one statistic at a time (a supplier's boards of one grey level and texture among
    boards of many) are each other's neighbours: a fifth of a folder so moves no statistic's KS test past Holm's
    correction (30-60% of 200-image folders in ``drift_power``), but this one in about 9 of 10.

    The statistics are those the baseline varies in (a constant one is the KS test's to watch), ``LOGGED`` ones on a
    log scale (sharpness spans three orders of magnitude: on its own scale a few sharp images would set every
    distance), each scaled by the baseline's robust spread."""
    row = Check("neighbours", "knn", None, None, base.images, current.images)
    if min(base.images, current.images) < least:
        return _skip(row, least)
    nearest = _nearest_images(base, current, seed)
    if nearest is None:
        return _replace(row, skipped="the baseline's images have one value of every statistic")
    n, (total, k) = base.images, nearest.shape
    rows, columns = np.repeat(np.arange(total), k), nearest.reshape(-1)
    # graph[i, j] = 1: j is one of i's k nearest; sparse (k per row), its transpose ready for the products below
    graph_t = sparse.csr_matrix((np.ones(total * k, np.float32), (columns, rows)), shape=(total, total))
    chosen = np.bincount(columns, minlength=total).astype(np.float32)  # how often each image is another's neighbour

    def statistic(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
        members = np.atleast_2d(np.asarray(first, dtype=np.int64))  # (permutations, n): the indices on one side
        side = np.zeros((len(members), total), dtype=np.float32)
        side[np.arange(len(members))[:, None], members] = 1.0
        # pairs (i, j) on one side: s_i s_j + (1 - s_i)(1 - s_j) summed over the graph, as matrix products
        both = np.einsum("bi,bi->b", (graph_t @ side.T).T, side)
        same = (total * k - k * n - side @ chosen + 2 * both) / (total * k)
        return same if np.ndim(first) > 1 else same[0]

    observed, p = permutation_p(statistic, n, total, permutations, seed)
    expected = (n * (n - 1) + (total - n) * (total - n - 1)) / (total * (total - 1))  # the null's mean
    return _tested(_replace(row, baseline=expected, current=observed), observed, p)


def _nearest_images(base: Sample, current: Sample, seed: int = 0) -> np.ndarray | None:
    """For every image of both sides pooled (the baseline's first), its ``GROUP_NEIGHBOURS`` nearest other images by
    `_group_space`, as indices into the pool; None when the baseline varies in no statistic."""
    before, after = _group_space(base.statistics, current.statistics)
    if not before.shape[1]:
        return None
    pooled = np.vstack([before, after])
    k = min(GROUP_NEIGHBOURS, len(pooled) - 1)
    jitter = np.random.default_rng(seed).uniform(0, 1e-9, pooled.shape)  # ties (equal images): broken at random
    _, nearest = cKDTree(pooled + jitter).query(pooled + jitter, k=k + 1)
    return nearest[:, 1:]  # each image's own row left out


def _group_space(base: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' statistics as the neighbours check measures them: the ``LOGGED`` ones on a log scale, then
    robust z-scores against the baseline; the statistics the baseline holds constant left out."""
    logged = [name in LOGGED for name in STATISTICS]
    before, after = (np.where(logged, np.log1p(np.maximum(side, 0)), side) for side in (base, current))
    centre = np.median(before, axis=0)
    scale = 1.4826 * np.median(np.abs(before - centre), axis=0)
    scale = np.where(scale > 0, scale, before.std(axis=0))
    kept = scale > 0
    return (before[:, kept] - centre[kept]) / scale[kept], (after[:, kept] - centre[kept]) / scale[kept]


def permutation_p(
    statistic: Callable[..., np.ndarray], n: int, total: int, permutations: int, seed: int
) -> tuple[float, float]:
    """(the observed statistic, its one-sided permutation p-value) for a two-sample ``statistic`` of the indices on
    the first side (``n`` of ``total``), vectorized over permutations, by ``scipy.stats.permutation_test``.

    In two stages (a sequential Monte Carlo test, Besag and Clifford 1991): ``permutations // STAGE`` first; where
    that p-value exceeds ``SETTLED`` (which Holm's correction never rejects) it is the answer, else all
    ``permutations`` run for the resolution a drifted check needs. Still a valid p-value (a small one always comes
    from the full run), at a fifth of the cost on a folder like the baseline: most runs."""
    p = 1.0
    for resamples in (max(permutations // STAGE, 1), permutations):
        result = stats.permutation_test(
            (np.arange(n), np.arange(n, total)),
            statistic,
            permutation_type="independent",
            vectorized=True,
            n_resamples=resamples,
            alternative="greater",
            batch=200,  # memory: a (total, 200) membership matrix at a time
            **_seeding(np.random.default_rng([seed, resamples])),
        )
        p = float(result.pvalue)
        if p > SETTLED or resamples == permutations:
            break
    return float(result.statistic), p


def _seeding(generator: np.random.Generator) -> dict[str, np.random.Generator]:
    """``scipy.stats.permutation_test``'s generator argument: ``rng`` from scipy 1.15, ``random_state`` before."""
    return {"rng" if "rng" in inspect.signature(stats.permutation_test).parameters else "random_state": generator}


def mmd_test(
    x: np.ndarray, y: np.ndarray, *, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float, float]:
    """The kernel two-sample test: (unbiased MMD², permutation p-value, bandwidth).

    The kernel is the Gaussian RBF ``exp(-|a-b|² / (2 σ²))`` with the median heuristic ``σ² = median |a-b|²``
    over the pooled sample (Gretton et al. 2012): it needs no tuning, follows the embeddings' scale, and, being
    computed on the pooled sample, is the same for every permutation, so the permutation p-value stays exact.
    The kernel matrix is computed once; each permutation's MMD² is then a matrix product with a 0/1 membership
    matrix, so ``scipy.stats.permutation_test`` runs 1000 permutations of 200 + 200 vectors in a tenth of a second.
    """
    pooled = np.vstack([x, y]).astype(np.float64)
    n, m, total = len(x), len(y), len(x) + len(y)
    if min(n, m) < 2:
        raise ValueError("the MMD test needs at least 2 vectors on each side")
    distances = squared_distances(pooled, pooled)
    bandwidth = float(np.median(distances[np.triu_indices(total, 1)]))
    if bandwidth <= 0:  # most vectors equal: the mean of the nonzero distances, else any scale
        positive = distances[distances > 0]
        bandwidth = float(positive.mean()) if positive.size else 1.0
    kernel = np.exp(-distances / (2 * bandwidth))
    row_sums = kernel.sum(axis=1)
    everything = row_sums.sum()

    def statistic(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
        members = np.atleast_2d(np.asarray(first, dtype=np.int64))  # (permutations, n): the indices on x's side
        indicator = np.zeros((total, len(members)))
        indicator[members.T, np.arange(len(members))] = 1.0
        xx = np.einsum("ib,ib->b", indicator, kernel @ indicator)  # sum of k over pairs within x (diagonal too)
        xy = row_sums @ indicator - xx
        yy = everything - xx - 2 * xy
        mmd2 = (xx - n) / (n * (n - 1)) + (yy - m) / (m * (m - 1)) - 2 * xy / (n * m)  # k(a, a) = 1 left out
        return mmd2 if np.ndim(first) > 1 else mmd2[0]

    observed, p = permutation_p(statistic, n, total, permutations, seed)
    return observed, p, bandwidth


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every ``|a_i - b_j|²``, as ``|a|² + |b|² - 2 a·b``: one matrix product (BLAS), a tenth of the time of scipy's
    ``cdist`` for 500 embeddings of 256 values, which is most of a run's drift check otherwise. In float64 and about
    the mean (the embeddings of one model's images can agree to six digits, where ``|a|²`` would round the
    difference away), clipped at 0 against rounding; a row against itself is exactly 0."""
    itself = a is b
    centre = np.asarray(b, dtype=np.float64).mean(axis=0)  # distances do not move; the rounding of |a|² does
    a, b = np.asarray(a, dtype=np.float64) - centre, np.asarray(b, dtype=np.float64) - centre
    squared = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    squared = np.maximum(squared, 0.0)
    if itself:
        np.fill_diagonal(squared, 0.0)
    return squared


def holm(pvalues: list[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction: (rejected at family-wise level ``alpha``, adjusted p-values).

    The i-th smallest p-value is multiplied by (m - i + 1), the products made non-decreasing in that order and capped
    at 1; a check is rejected where its adjusted p is at most ``alpha`` (Holm 1979). Eight lines of numpy rather than
    statsmodels' ``multipletests``, which gives the same values (a test checks them against it) but costs a line
    PC 145 MB of install (statsmodels and pandas) and each call a ``gc.collect()`` (0.13 s in a process that
    holds PyTorch)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if not p.size:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted <= alpha, adjusted


def _corrected(rows: list[Check], alpha: float) -> list[Check]:
    ran = [i for i, row in enumerate(rows) if not row.skipped]
    rejected, adjusted = holm([float(rows[i].p) for i in ran], alpha)  # type: ignore[arg-type]
    out = list(rows)
    for i, reject, p in zip(ran, rejected, adjusted):
        out[i] = _replace(rows[i], p_holm=float(p), drifted=bool(reject))
    return out


@dataclass(frozen=True)
class Atypical:
    """One current image and how unlike the baseline it is: ``score`` sums its robust z-scores; ``reason`` names
    the largest (and, from `rank_grouped`, how many of its nearest images are the run's)."""

    index: int
    name: str
    score: float
    reason: str


def rank_grouped(baseline: Baseline | Sample, current: Sample) -> list[Atypical]:
    """The current images, most grouped first: by how many of their ``GROUP_NEIGHBOURS`` nearest images (the
    neighbours check's) are the run's own rather than the baseline's, ties in `rank_atypical`'s order. When that
    check drifted, the first are the images that make up the group (a fifth of a folder from another line), which
    `rank_atypical` alone would not find: each of them lies inside the baseline's range. After a shift of the whole
    run (a lamp) nearly every image is the run's own group, and the order is `rank_atypical`'s."""
    base = baseline.sample if isinstance(baseline, Baseline) else baseline
    by_atypicality = rank_atypical(base, current)
    nearest = _nearest_images(base, current)
    if nearest is None:
        return by_atypicality
    own = (nearest[base.images :] >= base.images).sum(axis=1)  # per current image: its neighbours from the run
    k = nearest.shape[1]
    grouped = sorted(by_atypicality, key=lambda found: -own[found.index])  # stable: atypicality breaks ties
    return [
        replace(found, reason=f"{found.reason}; {own[found.index]} of its {k} nearest images are this run's")
        for found in grouped
    ]


def rank_atypical(baseline: Baseline | Sample, current: Sample, *, neighbours: int = NEIGHBOURS) -> list[Atypical]:
    """The current images, most atypical first (the review queue's order), by `_atypicality`."""
    base = baseline.sample if isinstance(baseline, Baseline) else baseline
    scores, z, centre, far = _atypicality(base, current, neighbours, itself=False)
    reasons = [
        f"{STATISTICS[j]} {_num(current.statistics[i, j])} (baseline {_num(centre[j])})"
        for i, j in enumerate(z.argmax(axis=1))
    ]
    for image, value in zip(current.embedding_image, far):
        if value > z[image].max():
            reasons[image] = "embedding far from the baseline's"
    order = np.argsort(-scores, kind="stable")
    return [Atypical(int(i), current.names[i], float(scores[i]), reasons[i]) for i in order]


def _atypicality(
    base: Sample, current: Sample, neighbours: int, *, itself: bool, within: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each current image's atypicality against ``base``: the sum over the statistics of ``|x - median| / (1.4826
    MAD)`` against the baseline (robust: the baseline's own odd images do not widen the scale), each capped at
    ``Z_CAP``; where both sides have embeddings, plus how much farther its ``neighbours`` nearest baseline
    embeddings are than the baseline's are from each other (the same robust z, only the far side counts).
    ``itself``: ``current`` is ``base``, each image left out of its own neighbours; ``within``: the baseline's
    `_within` distances when the caller has them. Returns (scores, capped statistic z per image, the baseline's
    medians, embedding z per embedding)."""
    if not base.images:
        raise ValueError("an empty baseline")
    z, centre = _robust_z(base.statistics, current.statistics)
    z = np.minimum(z, Z_CAP)
    scores = z.sum(axis=1)
    far = _embedding_z(base.embeddings, current.embeddings, neighbours, itself=itself, within=within)
    np.add.at(scores, current.embedding_image.astype(np.int64), far)
    return scores, z, centre, far


def _robust_z(reference: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = np.median(reference, axis=0)
    scale = 1.4826 * np.median(np.abs(reference - centre), axis=0)
    spread = reference.std(axis=0)
    scale = np.where(scale > 0, scale, spread)  # more than half the baseline equal: its standard deviation
    distance = np.abs(values - centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, distance / np.where(scale > 0, scale, 1.0), np.where(distance > 0, Z_CAP, 0.0))
    return z, centre


def _comparable(base: np.ndarray, current: np.ndarray, neighbours: int = NEIGHBOURS) -> bool:
    """Whether two samples' embeddings can be compared: enough on the baseline's side, of the same length."""
    return len(base) > neighbours and len(current) > 0 and base.shape[1] == current.shape[1]


def _within(base: np.ndarray, neighbours: int) -> np.ndarray | None:
    """Each baseline embedding's mean distance to its ``neighbours`` nearest others (itself left out); None when
    there are too few to compare."""
    if len(base) <= neighbours:
        return None
    return np.sort(np.sqrt(squared_distances(base, base)), axis=1)[:, 1 : neighbours + 1].mean(axis=1)


def _embedding_z(
    base: np.ndarray, current: np.ndarray, neighbours: int, *, itself: bool = False, within: np.ndarray | None = None
) -> np.ndarray:
    if not _comparable(base, current, neighbours):
        return np.zeros(len(current))
    k = neighbours
    within = within if within is not None else _within(base, k)
    across = within if itself else np.sort(np.sqrt(squared_distances(current, base)), axis=1)[:, :k].mean(axis=1)
    z, _ = _robust_z(within[:, None], across[:, None])
    return np.where(across[:, None] > np.median(within), np.minimum(z, Z_CAP), 0.0)[:, 0]


def _describe(baseline: Baseline | Sample) -> dict[str, Any]:
    if not isinstance(baseline, Baseline):
        return {}
    return {
        "model_sha256": baseline.model_sha256,
        "data": baseline.data,
        "split": baseline.split,
        "origin": baseline.origin,
        "created": baseline.created,
        "digest": baseline.digest(),
    }


def _notes(baseline: Baseline | Sample, base: Sample, current: Sample, model_sha256: str | None) -> list[str]:
    notes = []
    classes = list(dict.fromkeys([*base.classes, *current.classes]))
    if base.thresholds and current.thresholds and _effective(base, classes) != _effective(current, classes):
        notes.append("the screen's thresholds differ from the baseline's: fail rates and scores compare two screens")
    if (
        isinstance(baseline, Baseline)
        and model_sha256
        and baseline.model_sha256
        and model_sha256 != baseline.model_sha256
    ):
        notes.append("the model differs from the baseline's: record the baseline again with calibrate")
    return notes


def _effective(sample: Sample, classes: list[str]) -> list[float]:
    """Each class's threshold as the sample was collected: its own, else ``default`` (which a calibrated screen, naming
    every class, never uses)."""
    return [threshold_of(sample.thresholds, name) for name in classes]


def _skip(row: Check, least: int) -> Check:
    return _replace(row, skipped=f"{TOO_FEW} {least} on a side ({row.n_baseline}, {row.n_current})")


def _tested(row: Check, statistic: float, p: float) -> Check:
    return _replace(row, statistic=statistic, p=p)


def _replace(row: Check, **changes: Any) -> Check:
    return replace(row, **changes)


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
