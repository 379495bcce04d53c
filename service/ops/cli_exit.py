"""How every bin/ command ends: its own exit code, or quietly when its reader goes away.

`bin/schedules list | head -1` closes the pipe after one line; Python then raises
BrokenPipeError from print() (or from the final flush at exit) and prints a traceback.
Commands like `ls` just stop there, and so do ours.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

# What a shell reports for a command that a closed pipe stopped (128 + SIGPIPE).
BROKEN_PIPE_EXIT = 141


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run a command's main() and exit with its code."""
    try:
        code = main()
        # Inside the try: piped output is buffered, so the pipe may break only here.
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be written; point stdout at /dev/null so the interpreter's own
        # flush at exit does not fail again with "Exception ignored".
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(BROKEN_PIPE_EXIT)
    sys.exit(code)
