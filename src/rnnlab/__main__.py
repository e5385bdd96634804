"""`python -m rnnlab`: the command line.

A process of a multi-process run (torchrun sets WORLD_SIZE) leaves with `os._exit` once the
command has returned, its process group is torn down and its output flushed: on a loaded machine
a gloo thread left joinable could otherwise abort the finished process from a C++ destructor at
interpreter exit ("terminate called without an active exception", SIGABRT), turning a complete
run into a failed one. Nothing is left to do by then: checkpoints are written and synced.
"""

import os
import sys

from rnnlab.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
