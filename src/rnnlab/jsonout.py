"""Strict JSON for every front door: the CLI's `--json` lines and the server's answers.

JSON has no NaN or infinity, yet a diverged model has an infinite perplexity: such a figure is
written as null (at any depth), never as the `NaN` that Python's `json` emits and most JSON
readers reject.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """`value` with every non-finite float, at any depth of dicts and lists, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def strict_dumps(value: Any, ensure_ascii: bool = False) -> str:
    """One line of JSON that any reader accepts (non-finite numbers as null)."""
    return json.dumps(finite_or_null(value), ensure_ascii=ensure_ascii, allow_nan=False)
