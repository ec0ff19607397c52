"""``--space key=loguniform(1e-4,1e-1)``: ranges for random and Optuna search, as Ray Tune's own domains.

A range is read and checked here, before any trial starts: the function must be one of `DISTRIBUTIONS`,
its bounds numbers in order (a log range above 0). Random search draws every trial's values at the
start, with a seeded generator, so the same seed draws the same configs, and each drawn config goes
through the config validation like a grid's. Optuna chooses each trial's values from the results so
far; its bounds are validated at the start (the lowest and the highest value of every range, each
category) and each drawn config when its trial starts. A ``--grid`` key in a random or Optuna search
is a ``choice`` among its values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import ConfigError, parse_override

DISTRIBUTIONS = {
    "uniform": "uniform(low,high): any number between",
    "loguniform": "loguniform(low,high): spread evenly on a log scale, low > 0",
    "quniform": "quniform(low,high,q): uniform, rounded to a multiple of q",
    "randint": "randint(low,high): an integer from low to high-1",
    "choice": "choice(a,b,...): one of the values",
}
_CALL = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.DOTALL)


def split_values(text: str) -> list[str]:
    """``null,10`` -> ['null', '10']; commas inside brackets stay (``[0,1],[2]`` -> ['[0,1]', '[2]'])."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


@dataclass(frozen=True)
class Range:
    key: str  # section.key
    kind: str  # one of DISTRIBUTIONS
    args: tuple[Any, ...]  # numbers, or for choice the raw values (read as YAML by the config)

    def domain(self) -> Any:
        """The Ray Tune domain (`ray.tune.loguniform(...)` and the like)."""
        from ray import tune

        return getattr(tune, self.kind)(*self.args) if self.kind != "choice" else tune.choice(list(self.args))

    def extremes(self) -> list[Any]:
        """The values that bound what this range can draw (checked against the config before any trial)."""
        if self.kind == "choice":
            return list(self.args)
        low, high = self.args[0], self.args[1]
        return [low, high - 1] if self.kind == "randint" else [low, high]

    def text(self) -> str:
        return f"{self.kind}({','.join(map(str, self.args))})"


def _number(text: str, item: str) -> float | int:
    text = text.strip()
    for read in (int, float):  # not YAML: it reads 1e-4 as a string
        try:
            value = read(text)
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    raise ConfigError(f"--space {item!r}: {text or '(empty)'} is not a number")


def parse_range(item: str) -> Range:
    """``train.lr0=loguniform(1e-4,1e-1)`` -> Range; a bad function, count or order of bounds is one line."""
    key, sep, call = item.partition("=")
    key = key.strip()
    match = _CALL.match(call) if sep else None
    if not key or match is None:
        raise ConfigError(f"--space {item!r}: expected section.key=function(...), e.g. train.lr0=loguniform(1e-4,1e-1)")
    kind, inner = match.groups()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"--space {item!r}: unknown function {kind}; one of {', '.join(DISTRIBUTIONS)}")
    raw = split_values(inner)
    if kind == "choice":
        if not inner.strip() or any(not value for value in raw):
            raise ConfigError(f"--space {item!r}: choice needs values, e.g. choice(SGD,AdamW)")
        _check_key(key, raw[0], item)
        return Range(key, kind, tuple(raw))
    count = 3 if kind == "quniform" else 2
    if len(raw) != count:
        raise ConfigError(f"--space {item!r}: {DISTRIBUTIONS[kind]}")
    numbers = [_number(text, item) for text in raw]
    if kind == "randint" and not all(isinstance(n, int) for n in numbers):
        raise ConfigError(f"--space {item!r}: randint takes integers")
    low, high = numbers[0], numbers[1]
    if not low < high:
        raise ConfigError(f"--space {item!r}: the low bound {low} must be below the high bound {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"--space {item!r}: a log range must lie above 0")
    if kind == "quniform" and numbers[2] <= 0:
        raise ConfigError(f"--space {item!r}: q must be above 0")
    if kind == "quniform" and not all(math.isclose(b / numbers[2], round(b / numbers[2])) for b in (low, high)):
        raise ConfigError(
            f"--space {item!r}: the bounds must be multiples of q (Tune draws multiples of q between them)"
        )
    _check_key(key, low, item)
    return Range(key, kind, tuple(numbers))


def _check_key(key: str, value: Any, item: str) -> None:
    try:
        parse_override(f"{key}={value}")
    except ConfigError:
        raise ConfigError(f"--space {item!r}: the key must be section.key, e.g. train.lr0") from None


def parse_space(items: Sequence[str], grid: Mapping[str, Sequence[str]] = {}) -> list[Range]:
    """Every ``--space`` range, and each ``--grid`` key as a choice; a key given twice is one line."""
    ranges = [parse_range(item) for item in items]
    ranges += [Range(key, "choice", tuple(values)) for key, values in grid.items()]
    keys = [r.key for r in ranges]
    if repeated := sorted({k for k in keys if keys.count(k) > 1}):
        raise ConfigError(f"--space: {', '.join(repeated)} given more than once (in --space or --grid)")
    if not ranges:
        raise ConfigError("sweep: a random or Optuna search needs at least one --space section.key=function(...)")
    return ranges


def _as_override(value: Any) -> str:
    """A drawn value as an override's text (YAML reads it back as the same value)."""
    if isinstance(value, float):
        text = repr(float(value))
        mantissa, e, exponent = text.partition("e")
        # YAML 1.1 reads 1e-05 as a string: its floats need a dot (1.0e-05)
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return str(value)


def overrides_of(values: Mapping[str, Any]) -> list[str]:
    """Drawn values (key -> value) as ``section.key=value`` overrides, in the space's order."""
    return [f"{key}={_as_override(value)}" for key, value in values.items()]


def draw(ranges: Sequence[Range], samples: int, seed: int) -> list[list[str]]:
    """``samples`` configs drawn at random by Tune's domains from one seeded generator: the same seed, the same draws."""
    import numpy as np

    if samples < 1:
        raise ConfigError(f"--samples {samples}: must be at least 1")
    rng = np.random.default_rng(seed)
    domains = [(r.key, r.domain()) for r in ranges]
    return [overrides_of({key: domain.sample(random_state=rng) for key, domain in domains}) for _ in range(samples)]


def bound_configs(ranges: Sequence[Range]) -> list[list[str]]:
    """One override set per extreme value of each range (the others at their lowest): what Optuna could draw at the edges."""
    lowest = {r.key: r.extremes()[0] for r in ranges}
    configs = [overrides_of({**lowest, r.key: value}) for r in ranges for value in r.extremes()]
    return list({" ".join(c): c for c in configs}.values())  # each distinct set once
