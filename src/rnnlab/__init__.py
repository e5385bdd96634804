"""rnnlab: character-level recurrent language models you can train, inspect and trust."""

from __future__ import annotations

import os

# Same command, same numbers: without this, Intel MKL may split a multi-threaded matrix product
# differently from run to run, and a sweep setting reran 1e-7 apart (measured: 1 run in 3 of a
# 2-thread num_steps-64 setting; 4 in 4 identical with it, at no measurable cost in speed). MKL
# reads it when it first runs, so it is set here, before rnnlab imports torch; a value the user
# set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO")

__version__ = "0.1.0"
