"""Hydra override syntax -> Optuna distributions, and a trial's parameters -> job overrides.

`key=choice(a,b)` and `key=a,b` are categorical, `key=range(lo,hi[,step])` of integers is an
integer range (hi excluded, as in Python), `key=interval(lo,hi)` is a float range and
`key=tag(log, interval(lo,hi))` the same on a log scale. Anything else is a fixed override that
every job gets. Categorical choices are kept as override strings, so a job receives exactly what
the command line said (`cell=gru`, `model.hidden_size=64`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rnnlab.errors import ConfigError


@dataclass
class SearchSpace:
    """What a sweep varies and what it keeps fixed."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # name -> key as written ("+name")
    fixed: dict[str, str] = field(default_factory=dict)  # name -> override, in given order

    def job_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of the job that evaluates `params` (a trial's parameters)."""
        varied = [f"{self.keys[name]}={params[name]}" for name in self.distributions]
        return [*self.fixed.values(), *varied]

    def described(self) -> dict[str, str]:
        return {name: describe(dist) for name, dist in sorted(self.distributions.items())}


def describe(distribution: BaseDistribution) -> str:
    """A short stable text for a distribution (study identity, error messages)."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    low, high = distribution.low, distribution.high
    if distribution.log:
        return f"log({low}, {high})"
    step = getattr(distribution, "step", None)
    kind = "range" if isinstance(distribution, IntDistribution) else "interval"
    return f"{kind}({low}, {high}" + (f", step {step})" if step not in (None, 1) else ")")


def _distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if isinstance(value, IntervalSweep):
        return FloatDistribution(value.start, value.end, log="log" in value.tags)
    if isinstance(value, RangeSweep) and not value.shuffle:
        numbers = [value.start, value.stop, value.step]
        if all(isinstance(number, int) for number in numbers):
            last = list(override.sweep_iterator())[-1]
            return IntDistribution(value.start, last, step=value.step)
    return CategoricalDistribution(list(override.sweep_string_iterator()))


def parse_search_space(params: Mapping[str, Any] | None, arguments: list[str]) -> SearchSpace:
    """`params` (the config's search space, key -> override value) updated by the command-line
    `arguments`: a key given on the command line replaces the config's, so `key=value` fixes a
    parameter and `'key=choice(...)'` narrows or widens it."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(lines):
        name = override.key_or_group
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if not override.is_sweep_override():
            space.fixed[name] = override.input_line
            continue
        try:
            space.distributions[name] = _distribution(override)
        except ValueError as error:
            raise ConfigError(f"{name}: {error} (in {override.input_line!r})") from None
        space.keys[name] = override.get_key_element()
    return space
