"""Run configuration as plain data: one dataclass per recipe, saved whole (with its ``kind``) as RUN/config.json.

Every recipe's config subclasses :class:`RunConfig` and registers itself under its ``kind``, so a run
folder can be read back without knowing in advance which recipe made it (``config_from_dict``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="RunConfig")
MAX_IMAGE_SIZE = 1024  # a backbone's input side: 64x64 images upsampled further only exhaust memory
MAX_SEED = (
    2**32 - 1
)  # numpy's seeds stop here; torch's overflow a little further with a message naming no option
CONFIGS: dict[str, type["RunConfig"]] = {}


def register_config(cls: type[C]) -> type[C]:
    """Class decorator: make ``cls`` the config of runs whose ``kind`` is ``cls.kind`` (or one of its aliases)."""
    for name in (cls.kind, *cls.aliases):
        CONFIGS[name] = cls
    return cls


@dataclass
class RunConfig:
    """Base of every recipe's configuration: plain fields, a ``kind``, strict round trips through JSON."""

    kind: ClassVar[str] = "run"
    aliases: ClassVar[tuple[str, ...]] = ()  # kinds written by earlier versions
    made_by: ClassVar[str] = (
        ""  # the command that makes such runs, for messages about the wrong kind of folder
    )
    seeds: ClassVar[tuple[str, ...]] = (
        "seed",
    )  # integer fields that seed a generator: at most MAX_SEED
    at_least_one: ClassVar[tuple[str, ...]] = ()  # integer fields that must be >= 1
    positive: ClassVar[tuple[str, ...]] = ()  # float fields that must be > 0

    data: str | None = None  # None: the embedded sample; a path, URL or "tiny-imagenet"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any], source: str | Path | None = None) -> C:
        """Build from plain data; unknown keys and a foreign ``kind`` are errors that name them (and the run
        folder ``source`` they came from, when given)."""
        values = dict(values)
        values.pop(
            "changed_on_resume", None
        )  # the run's record of options raised on resume (Run.write_config)
        kind = values.pop("kind", cls.kind)
        if kind not in (cls.kind, *cls.aliases):
            # A folder of another recipe (`rank evaluate` on a `train` run): say which, and which command fits.
            where = f"{source} is" if source is not None else "this is"
            other = CONFIGS.get(kind)
            theirs = f" (made by `{other.made_by}`)" if other is not None and other.made_by else ""
            wanted = f"; pass a folder `{cls.made_by}` made" if cls.made_by else ""
            raise ValueError(f"{where} a {kind!r} run{theirs}, not a {cls.kind!r} run{wanted}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"unknown configuration key(s) {sorted(unknown)} for a {cls.kind!r} run; known: {sorted(known)}"
            )
        return cls(**values)

    def validate(self: C) -> C:
        """Raise ``ValueError`` naming the option when a value is out of range; return self."""
        for name in self.at_least_one:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{name} must be an integer of at least 1, got {value!r} ({option(name)})"
                )
        for name in self.positive:
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"{name} must be positive, got {getattr(self, name)!r} ({option(name)})"
                )
        for f in fields(self):
            value = getattr(self, f.name)
            # nan passes every `> 0` / `< 0` check, and nan or inf as a learning rate or decay makes nan weights.
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(
                    f"{f.name} must be a finite number, got {value} ({option(f.name)})"
                )
        if self.seed < 0:
            raise ValueError(
                f"seed must be a non-negative integer, got {self.seed} (option --seed)"
            )
        for name in self.seeds:
            value = getattr(self, name)
            if value > MAX_SEED:
                raise ValueError(
                    f"{name} must be at most {MAX_SEED} (2**32 - 1), got {value} ({option(name)})"
                )
        return self


def option(field: str) -> str:
    """How a config field is named on the command line, for messages that name both."""
    return f"option --{field.replace('_', '-')}"


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """The config of whichever recipe wrote ``values`` (a run's config.json)."""
    kind = values.get("kind")
    if kind not in CONFIGS:
        raise ValueError(
            f"unknown run kind {kind!r}; known: {sorted(CONFIGS)} (is the recipe imported?)"
        )
    return CONFIGS[kind].from_dict(values)
