"""rnnlab: character-level recurrent language models you can train, inspect and trust."""

from __future__ import annotations

__version__ = "0.1.0"
