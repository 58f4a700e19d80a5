"""What every rrnet command shares: unusable arguments end it with one line and exit 2.

argparse prints the whole usage block on an error; in batch logs of survey runs one
line that names the command and the problem is what an operator needs.
"""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Unusable command-line arguments (reported as one line, exit status 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError` instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def usage_error(prog: str, message: object) -> int:
    """Print ``prog: error: message`` on one line to stderr; return the exit status 2."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2
