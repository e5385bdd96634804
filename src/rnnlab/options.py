"""A config option declared once: its default, help text, accepted range and other spellings.

A dataclass field made with `option()` carries in its metadata everything a front door needs, so
no door declares the option again: `rnnlab.cli.flags` makes a flag of it (an alias becomes a
second spelling of the flag), `from_options` turns keywords into the config
(`LanguageModel.predict(num_preds=...)`, or `steps=`), and `rnnlab.serve.app` builds its request
schema from it (the bounds become JSON-schema limits). `check_fields`, called by the config's
`__post_init__`, is the one place a value is held against its range; the error names the flag,
as the CLI prints it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from rnnlab.errors import UsageError

_BOUNDS = ("ge", "gt", "le")


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    must: str | None = None,
    aliases: Sequence[str] = (),
    metavar: str | None = None,
) -> Any:
    """A dataclass field whose metadata holds its help, its range and its other names.

    Args:
        ge, gt, le: the accepted range (a float must also be finite).
        must: what the value must be, as the error says it ("in (0, 1] (1 = no limit)"); it is
            formatted with the bounds ("between {ge} and {le:,}"), so a number is written once.
        aliases: other names users already type (`steps` for `num_preds`): a flag `--steps`, a
            keyword `steps=`, a JSON field `"steps"`.
    """
    given = {"choices": choices, "ge": ge, "gt": gt, "le": le, "must": must, "metavar": metavar}
    metadata: dict[str, Any] = {"help": help}
    metadata.update({k: v for k, v in given.items() if v is not None})
    if aliases:
        metadata["aliases"] = tuple(aliases)
    return dataclasses.field(default=default, metadata=metadata)


def names_of(f: dataclasses.Field) -> tuple[str, ...]:
    """A field's name, then its aliases."""
    return (f.name, *f.metadata.get("aliases", ()))


def spelled(f: dataclasses.Field) -> str:
    """How an error names the option: its flags, `--num-preds/--steps`."""
    return "/".join("--" + n.replace("_", "-") for n in names_of(f))


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, tuple[type, ...], str]]:
    """name -> (field, the Python types it accepts, how a message names its kind)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        args = typing.get_args(hints[f.name]) if _is_union(hints[f.name]) else (hints[f.name],)
        base = next(a for a in args if a is not type(None))
        accepted, kind = {
            int: ((numbers.Integral,), "an integer"),
            float: ((numbers.Real,), "a number"),
            str: ((str,), "a string"),
        }.get(base, ((object,), "a value"))
        out[f.name] = (f, accepted, kind)
    return out


def _is_union(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union


def must_text(f: dataclasses.Field) -> str:
    """What the value must be, in words: the declared `must`, or one made from the bounds."""
    meta = f.metadata
    if "must" in meta:
        return meta["must"].format(**{k: meta[k] for k in _BOUNDS if k in meta})
    low = f">= {meta['ge']}" if "ge" in meta else f"> {meta['gt']}" if "gt" in meta else ""
    high = f"<= {meta['le']}" if "le" in meta else ""
    return " and ".join(p for p in (low, high) if p) or "a finite number"


def check_option(cls: type, name: str, value: Any) -> None:
    """Refuse `value` for the option `name` of `cls` with a one-line UsageError, or return."""
    f, accepted, kind = _fields(cls)[name]
    meta = f.metadata
    if value is None and f.default is None:
        return  # "not given": the config decides what it means
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise UsageError(f"{spelled(f)} must be {kind}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise UsageError(f"unknown {name} {value!r}: use one of {', '.join(meta['choices'])}")
    bad = (
        (isinstance(value, numbers.Real) and not math.isfinite(value))
        or ("ge" in meta and value < meta["ge"])
        or ("gt" in meta and value <= meta["gt"])
        or ("le" in meta and value > meta["le"])
    )
    if bad:
        raise UsageError(f"{spelled(f)} must be {must_text(f)}, got {value}")


def check_fields(config: Any) -> None:
    """Check every option of a config instance (its `__post_init__` calls this)."""
    for name in _fields(type(config)):
        check_option(type(config), name, getattr(config, name))


def _by_name(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """Options keyed by field name; an alias is renamed, an option given twice refused."""
    owner = {n: f.name for f, _, _ in _fields(cls).values() for n in names_of(f)}
    values: dict[str, Any] = {}
    spelling: dict[str, str] = {}
    for given, value in options.items():
        name = owner.get(given, given)  # an unknown name is left for the caller to refuse
        if name in values:
            raise UsageError(f"{spelling[name]!r} and {given!r} name the same option: give one")
        values[name], spelling[name] = value, given
    return values


def accepts_aliases(cls: type) -> type:
    """Class decorator (after @dataclass): the constructor takes aliases too, `steps=` included."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **_by_name(cls, kwargs))

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def from_options(
    cls: type, options: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> Any:
    """`cls(**options)`, where an option may be spelled by an alias (`steps` for `num_preds`).

    `defaults` fill the options not given under any spelling. An unknown name, or one option
    given under two spellings, is a one-line UsageError.
    """
    known = {n for f, _, _ in _fields(cls).values() for n in names_of(f)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"unknown option {', '.join(map(repr, unknown))}: {cls.__name__} takes "
            f"{', '.join(sorted(known))}"
        )
    return cls(**{**(defaults or {}), **_by_name(cls, options)})
