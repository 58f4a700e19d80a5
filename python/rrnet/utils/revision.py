"""Which source revision of rrnet is running, when it runs from a git checkout.

The package version has stayed 0.1.0 through hundreds of commits, so a catalogue's
``rrnet.version`` alone did not say which code wrote it. An editable install from the
repository (``make build``, ``make demo``) knows its commit; an installed wheel does not,
and then only the version is recorded.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
"""The ``rrnet`` package folder this module was imported from."""


@functools.cache
def source_commit(package: Path = PACKAGE) -> str | None:
    """``git rev-parse HEAD`` of the repository ``package`` sits in as ``python/rrnet``
    (``+dirty`` when tracked files differ from it), else None: a wheel in site-packages,
    a virtual environment or an unpacked sdist inside someone else's repository, is no
    rrnet checkout (the repository's top must be the tree ``package`` sits in)."""
    root = package.parent.parent
    if package != root / "python" / "rrnet" or not (root / "crates" / "rrnet-core").is_dir():
        return None
    # another user's checkout (a group's shared install): git refuses it as of "dubious
    # ownership", and the commit went unrecorded. Trusting it adds little: its owner
    # already chooses every line of the Python code running here; and the calls stay
    # read-only (no index refresh written, no fsmonitor hook run). Git honours
    # safe.directory on the command line from 2.39; older ones still refuse (no commit).
    git = ["git", "--no-optional-locks", "-c", f"safe.directory={root.resolve()}",
           "-c", "core.fsmonitor=false", "-C", str(root)]  # fmt: skip
    try:
        lines = subprocess.run(  # one line each: the top folder (spaces and all), HEAD
            [*git, "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.splitlines()  # fmt: skip
        if len(lines) != 2 or Path(lines[0]).resolve() != root.resolve():
            return None  # e.g. an unpacked sdist inside another repository
        head = lines[1].strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, too slow
        return None
    return f"{head}+dirty" if changed else head or None
