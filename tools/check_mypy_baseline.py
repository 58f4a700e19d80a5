"""Run mypy and compare its errors with a committed baseline that may only shrink.

Why: the code base predates type checking; failing on every old error would make the
check useless, ignoring them all would let new ones in. Errors are compared without
line numbers (``path: error: message  [code]``, counted), so edits elsewhere in a file
do not break the check.

    python tools/check_mypy_baseline.py            # exit 1 on an error not in the baseline
    python tools/check_mypy_baseline.py --update   # rewrite the baseline (make mypy-baseline)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "mypy-baseline.txt"
# path:line[:col]: error: message  [code]
_LINE = re.compile(r"^(?P<path>[^:\s][^:]*):\d+(?::\d+)?: error: (?P<rest>.*)$")


def normalise(output: str) -> list[str]:
    """The error lines of mypy's output without line numbers (notes are dropped)."""
    errors = []
    for line in output.splitlines():
        m = _LINE.match(line.rstrip())
        if m:
            errors.append(f"{m['path'].replace(chr(92), '/')}: error: {m['rest']}")
    return sorted(errors)


def run_mypy(extra: list[str]) -> list[str]:
    """Run mypy with the pyproject configuration; exit on a crash or a bad configuration."""
    cmd = [sys.executable, "-m", "mypy", "--no-pretty", "--no-error-summary", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):  # 2: mypy itself failed
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"mypy failed (exit {proc.returncode}): {' '.join(cmd)}")
    return normalise(proc.stdout)


def read_baseline(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def compare(current: list[str], baseline: list[str]) -> tuple[list[str], list[str]]:
    """(new errors, errors gone), as multisets: one more copy of a known error is new."""
    cur, base = Counter(current), Counter(baseline)
    return sorted((cur - base).elements()), sorted((base - cur).elements())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="rewrite the baseline")
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("mypy_args", nargs="*", help="extra arguments for mypy")
    args = ap.parse_args(argv)
    current = run_mypy(args.mypy_args)
    if args.update:
        header = "# mypy errors accepted for now; may only shrink. Regenerate: make mypy-baseline\n"
        args.baseline.write_text(header + "".join(f"{e}\n" for e in current))
        print(f"{args.baseline.name}: {len(current)} errors")
        return 0
    new, gone = compare(current, read_baseline(args.baseline))
    if gone:
        print(f"{len(gone)} baseline error(s) are fixed; shrink the baseline: make mypy-baseline")
    if new:
        print(f"{len(new)} mypy error(s) not in {args.baseline.name}:")
        print("\n".join(f"  {e}" for e in new))
        print("Fix them (the baseline may only shrink).")
        return 1
    print(f"mypy: no error beyond the baseline ({len(current)} known)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
