"""matplotlib for every PNG rnnlab writes: the Agg backend (no display needed) and atomic saves.

matplotlib is imported on first use, not with rnnlab: most commands draw nothing.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType
from typing import Any

from rnnlab.checkpoint import write_atomic


def pyplot() -> ModuleType:
    """matplotlib.pyplot with the Agg backend: files only, never a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> None:
    """Write a figure as PNG atomically (temp file + rename): a killed run leaves no half file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_atomic(path, buf.getvalue())
