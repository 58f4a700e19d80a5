"""What every rrnet command shares: unusable arguments end it with one line and exit 2.

argparse prints the whole usage block on an error; in batch logs of survey runs one
line that names the command and the problem is what an operator needs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rrnet
from rrnet.inference.options import InferOptions
from rrnet.inference.quality import QualityThresholds
from rrnet.labels import COLUMN_STYLES, DEFAULT_COLUMN_STYLE
from rrnet.models.config import PRECISIONS
from rrnet.preprocess.rv_policy import DEFAULT_RV_MODE, RV_MODES
from rrnet.utils.cores import compute_threads
from rrnet.utils.faults import is_machine_fault, machine_fault_text


class UsageError(Exception):
    """Unusable command-line arguments (reported as one line, exit status 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError` instead of printing usage; the
    settings rrnet reads from the environment are checked with the arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # every command and sub-command: pipelines record what made their files
        self.add_argument("--version", action="version", version=f"%(prog)s {rrnet.__version__}")

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        parsed = super().parse_args(args, namespace)
        try:
            compute_threads()  # RRNET_NUM_THREADS, read again where threads start
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for name, value in vars(parsed).items():
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str | os.PathLike) and not _is_utf8(os.fspath(item)):
                    shown = os.fsencode(item).decode("utf-8", "backslashreplace")
                    option = _option_name(self, name, parsed)
                    raise UsageError(
                        f"{option}: {shown} is not valid UTF-8 (a name in another encoding?): "
                        "rename it or give it in UTF-8; the tables rrnet reads and writes take "
                        "UTF-8 only"
                    )
        return parsed


def _option_name(parser: argparse.ArgumentParser, dest: str, parsed: argparse.Namespace) -> str:
    """How the user wrote the argument stored as ``dest``: its longest option
    string (``--out``), else its name (a positional), looked for in the sub-command
    ``parsed`` chose too."""
    for action in parser._actions:
        if action.dest == dest:
            metavar = action.metavar if isinstance(action.metavar, str) else dest
            return max(action.option_strings, key=len, default=metavar)
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
            if chosen is not None:
                return _option_name(chosen, dest, parsed)
    return dest


def _is_utf8(text: str | bytes) -> bool:
    """False for a name with bytes that are not UTF-8 (Python keeps them as surrogates,
    which Polars cannot open: it failed with "Object does not have a .read() method")."""
    try:
        text.encode("utf-8") if isinstance(text, str) else text.decode("utf-8")
    except UnicodeError:
        return False
    return True


def seed(text: str) -> int:
    """An argparse type for ``--seed``: a whole number >= 0, as NumPy's generators take
    (a negative one was an unexpected ValueError deep in a run)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def usage_error(prog: str, message: object) -> int:
    """Print ``prog: error: message`` on one line to stderr; return the exit status 2."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 2


def parse_or_status(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when parsing ends the command.

    A usage error is one line and status 2; ``--help`` (argparse's SystemExit)
    returns its status instead of raising, so ``main`` returns in both cases.
    """
    try:
        return parser.parse_args(argv)
    except UsageError as exc:
        return usage_error(prog, exc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)


EXIT_NO_USABLE_ROWS = 3
"""Exit status when every input row failed for a fault of the data (missing files, no
RV, damaged spectra): the output is written for inspection, and the same input gives
the same again, so a workflow manager should not retry it."""
EXIT_OUTPUT_IN_USE = 75
"""Exit status when another run holds the output's lock: retry later (``EX_TEMPFAIL``
of sysexits.h). A machine fault (disk full, read-only) or any other failure is 1."""


def no_usable_rows(prog: str, message: object) -> int:
    """Print ``prog: error: message`` on one line; return :data:`EXIT_NO_USABLE_ROWS`."""
    run_failure(prog, message)
    return EXIT_NO_USABLE_ROWS


def output_in_use(prog: str, message: object) -> int:
    """Print ``prog: error: message`` on one line; return :data:`EXIT_OUTPUT_IN_USE`."""
    run_failure(prog, message)
    return EXIT_OUTPUT_IN_USE


def run_failure(prog: str, message: object) -> int:
    """Print ``prog: error: message`` on one line to stderr; return the exit status 1.

    For runs that started and could not finish (the output is locked, the disk is
    full or read-only): finished work is kept and ``--resume`` continues.
    """
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return 1


def data_dir_problem(data_dir: str | os.PathLike[str] | None) -> str | None:
    """One line when ``--data-dir`` is not a directory (every row would be missing_file)."""
    if data_dir is not None and not Path(data_dir).is_dir():
        return f"--data-dir is not a directory: {data_dir}"
    return None


def rv_problem(correct_rv: bool, rv_mode: str) -> str | None:
    """One line when ``--rv`` is chosen with ``--no-rv-correction``: it picks the RV the
    spectra are shifted by, and none is shifted (it was ignored without a word)."""
    if not correct_rv and rv_mode != DEFAULT_RV_MODE:
        return (
            f"--rv {rv_mode} chooses the RV each spectrum is shifted by, and "
            "--no-rv-correction shifts none: give one of them"
        )
    return None


def output_problem(out: str | os.PathLike[str], what: str = "--out") -> str | None:
    """One line when this user cannot write ``out`` (an existing file or folder, or the
    nearest folder above it that exists), found before any work: such a run failed at its
    end, told to --resume, which could never succeed; another user's read-only file was
    replaced by --overwrite (the folder was writable)."""
    if not os.fspath(out).strip():  # "" is the current folder to pathlib
        return f"{what} is empty: name the output"
    path = Path(out)
    if path.exists() and not os.access(path, os.W_OK, effective_ids=_EFFECTIVE):
        return f"{what} {path} {_why_not_writable(path)}"
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{parent} is a file, not a folder: choose another output"
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE):
        return f"{what} {path}: the folder {parent} {_why_not_writable(parent)}"
    return None


def _why_not_writable(path: Path) -> str:
    """A read-only file system is no one's permission: saying "this user" sent root
    looking at modes."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "is on a read-only file system" if read_only else "is not writable by this user"


def file_output_problem(out: str | os.PathLike[str], what: str = "--out") -> str | None:
    """:func:`output_problem`, and a folder where a table file is to be written (it was
    told to --resume or --overwrite, which both failed, the second after the whole run)."""
    if (problem := output_problem(out, what)) is not None:
        return problem
    if Path(out).is_dir():
        return f"{what} {out} is a folder: name a file to write"
    return None


def folder_output_problem(out: str | os.PathLike[str], what: str = "--out") -> str | None:
    """:func:`output_problem`, and a file where a folder is to be written (a store, a
    report, checkpoints): the twin of :func:`file_output_problem`."""
    if Path(out).exists() and not Path(out).is_dir():
        return f"{what} exists and is not a directory: {out}"
    return output_problem(out, what)


_EFFECTIVE = os.access in os.supports_effective_ids
"""Ask as the process's effective user (setuid wrappers) where the platform can."""


def blocking_file(exc: OSError) -> Path | None:
    """The file that stands where a folder of an output path should be (an output under
    ``data/x.fits.gz/``): a fault of the arguments, not of the machine; else None."""
    if exc.errno not in (errno.ENOTDIR, errno.EEXIST) or not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    return next((p for p in [*reversed(path.parents), path] if p.is_file()), None)


def environment_message(exc: BaseException, resumable: bool = True) -> str:
    """One line for a fault of the machine: what failed, where, and what to do."""
    filename = getattr(exc, "filename", None)
    where = f" ({filename})" if filename else ""
    what = getattr(exc, "strerror", None) or machine_fault_text(str(exc)) or error_line(exc)
    if not resumable:
        return f"{what}{where}: the run stopped; fix the cause and run it again"
    return (
        f"{what}{where}: the run stopped; finished work is kept, "
        "fix the cause and rerun with --resume"
    )


def os_error_exit(prog: str, exc: OSError, resumable: bool = True) -> int:
    """The exit for an OSError of a run: an output under a file is the arguments' fault
    (exit 2, one line); anything else is the machine's (exit 1, resume later)."""
    blocking = blocking_file(exc)
    if blocking is not None:
        return usage_error(prog, f"{blocking} is a file, not a folder: choose another output")
    return run_failure(prog, environment_message(exc, resumable))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's walltime, ``kill``): stops a run as Ctrl-C does."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


class _DiscardOnClosedPipe:
    """A text stream that, once its reader has gone (``cmd 2>&1 | head``), sends what is
    written to /dev/null instead of raising BrokenPipeError: the progress and the summary
    are not the product, and losing them must not stop a run half-way."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _gone(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the buffer's pending bytes too
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def survive_closed_pipes() -> None:
    """Let a command finish its work when stdout or stderr is a pipe closed early."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _DiscardOnClosedPipe):
            setattr(sys, name, _DiscardOnClosedPipe(stream))


def command(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command's ``main``: output to a closed pipe is dropped, and an error that
    escapes its own handling is still one line, never a traceback: a path this user may
    not reach (a folder without x for them: Python raises on ``exists()``) exits 2 naming
    it, anything else 1 (``RRNET_DEBUG=1`` re-raises)."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(*args: Any, **kwargs: Any) -> int:
            survive_closed_pipes()
            try:
                return main(*args, **kwargs)
            except PermissionError as exc:
                if os.environ.get("RRNET_DEBUG"):
                    raise
                where = os.fsdecode(exc.filename) if exc.filename else error_line(exc)
                return usage_error(
                    prog, f"permission denied: {where} (not accessible to this user)"
                )
            except KeyboardInterrupt as exc:
                return interrupted_exit(prog, exc)
            except Exception as exc:
                return unexpected_exit(prog, exc)

        return guarded

    return wrap


class _CommandLogFormat(logging.Formatter):
    """``PROG: message``, and ``PROG: warning: message`` from WARNING up, so that a batch
    log's warnings can be found (``grep warning``) and told from its progress lines."""

    def __init__(self, prog: str) -> None:
        super().__init__("%(message)s")
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{self.prog}: {level}{super().format(record)}"


def log_to_stderr(prog: str, level: int = logging.WARNING) -> None:
    """Log records of ``level`` and up to stderr in the commands' format (as
    ``logging.basicConfig``: nothing when the process has configured logging itself)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_CommandLogFormat(prog))
        root.addHandler(handler)
        root.setLevel(level)


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread (it killed the process
    without a word, where Ctrl-C says what was kept and how to resume)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def interrupted_exit(prog: str, exc: KeyboardInterrupt, resumable: bool = True) -> int:
    """One line and 130 (Ctrl-C) or 143 (SIGTERM)."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    hint = "; rerun with --resume to continue" if resumable else "; run it again"
    print(f"{prog}: {what}{hint}", file=sys.stderr)
    return 143 if isinstance(exc, Terminated) else 130


def run_errors(
    prog: str, run: Callable[[], int], usage: tuple[type, ...] = (), resumable: bool = True
) -> int:
    """Run a command's body; any way it ends becomes an exit status and at most one line.

    ``usage`` errors (bad input: arguments, catalogue, store, checkpoint) exit 2;
    a held lock 75 (:data:`EXIT_OUTPUT_IN_USE`); a fault of the machine (disk full,
    read-only, I/O) or any other failure 1; Ctrl-C exits 130, SIGTERM 143.
    ``resumable``: the command has ``--resume`` (the machine-fault line says to use it).
    Finished work is kept in every case and the line says what to do. ``RRNET_DEBUG=1``
    re-raises (the traceback) for developers.
    """
    from rrnet.utils.lock import LockError

    stop_on_sigterm()
    try:
        return run()
    except KeyboardInterrupt as exc:
        return interrupted_exit(prog, exc, resumable)
    except Exception as exc:
        if os.environ.get("RRNET_DEBUG"):
            raise
        if usage and isinstance(exc, usage):
            return usage_error(prog, error_line(exc))
        if isinstance(exc, LockError):
            return output_in_use(prog, exc)
        if isinstance(exc, OSError):
            return os_error_exit(prog, exc, resumable)
        return unexpected_exit(prog, exc, resumable)


def unexpected_exit(prog: str, exc: Exception, resumable: bool = True) -> int:
    """Exit 1 and one line for an error a command did not expect: the machine's fault
    said as such (out of memory, a full disk quoted by Polars), else its type and first
    line (``RRNET_DEBUG=1`` re-raises it for the traceback)."""
    if os.environ.get("RRNET_DEBUG"):
        raise exc
    if is_machine_fault(exc):
        return run_failure(prog, environment_message(exc, resumable))
    return run_failure(
        prog, f"unexpected {type(exc).__name__}: {error_line(exc)} (RRNET_DEBUG=1 shows where)"
    )


def error_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def add_reading_arguments(parser: argparse.ArgumentParser, *, when: str = "") -> None:
    """How spectra named by a catalogue are read, the same for rrnet-infer --catalog
    (``when="with --catalog: "``) and rrnet-run: ``--rv``, ``--allow-outside-data-dir``
    (:func:`reading_options` turns them into preprocessing options)."""
    parser.add_argument(
        "--rv",
        dest="rv_mode",
        choices=RV_MODES,
        default=DEFAULT_RV_MODE,
        help=f"{when}the catalogue's RV, the measured one, or auto (default: "
        "the catalogue's when usable, else measured)",
    )
    parser.add_argument(
        "--allow-outside-data-dir",
        action="store_true",
        help=f"{when}read files named outside --data-dir (absolute or ../); "
        "refused by default with status outside_data_dir",
    )
    parser.add_argument(
        "--find-files",
        action="store_true",
        help=f"{when}also find each file by its name anywhere under --data-dir (one "
        "index, built once), as rrnet-preprocess --find-files",
    )


def reading_options(args: argparse.Namespace) -> dict[str, Any]:
    """The preprocessing options of :func:`add_reading_arguments`."""
    options: dict[str, Any] = {
        "rv_mode": args.rv_mode,
        "allow_outside_data_dir": args.allow_outside_data_dir,
    }
    if args.find_files:  # only when asked: a run's identity names its options
        options["find_files"] = True
    return options


def add_raw_errors_argument(parser: argparse.ArgumentParser) -> None:
    """``--raw-errors`` (``InferOptions.calibrate = not args.raw_errors``)."""
    parser.add_argument(
        "--raw-errors",
        action="store_true",
        help="quote paper eq. 3 errors, without the checkpoint's calibration (from validation)",
    )


def add_output_arguments(parser: argparse.ArgumentParser, *, resume_help: str) -> None:
    """The output and model-running options shared by rrnet-infer and rrnet-run."""
    from rrnet.inference.writers import FORMATS

    parser.add_argument("--out", required=True, help="output catalogue path")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from the suffix, Parquet for any other; a format "
        "the suffix contradicts is refused)",
    )
    parser.add_argument(
        "--column-style",
        choices=COLUMN_STYLES,
        default=DEFAULT_COLUMN_STYLE,
        help="column names: identifier (teff, fe_h; default) or paper (Teff[K], FeH)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="spectra per forward call (default: per device)"
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic: fp32 (exact, default), tf32 or bf16 (faster on a GPU only; "
        "bf16 moves values by up to a few %% of their errors: docs/catalogue.md)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the ensembles: on a GPU the model runs 1.8-2.8x faster after "
        "~10-20 s of compiling at the start; no gain on a CPU",
    )
    either = parser.add_mutually_exclusive_group()  # as rrnet-preprocess: one or the other
    either.add_argument("--resume", action="store_true", help=resume_help)
    either.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--allow-fingerprint-mismatch",
        action="store_true",
        help="use checkpoints trained on differently preprocessed spectra",
    )
    parser.add_argument(
        "--min-snr",
        type=float,
        default=QualityThresholds.min_snr,
        help="flag rows whose blue or red S/N is below this (default %(default)g)",
    )
    parser.add_argument(
        "--ood-quantile",
        type=float,
        default=QualityThresholds.ood_quantile,
        help="flag spectra out of distribution at this quantile: about 1 - q of clean "
        "validation spectra are flagged (older checkpoints: of the training split's "
        "scores; default %(default)g)",
    )
    parser.add_argument(
        "--max-disagreement",
        type=float,
        default=QualityThresholds.max_disagreement,
        help="flag rows where the spread of the ensemble members' means exceeds this many "
        "times their mean predicted sigma (default %(default)g)",
    )


def infer_options(args: argparse.Namespace, **extra: Any) -> InferOptions:
    """The :class:`InferOptions` of :func:`add_output_arguments`' options (plus ``extra``)."""
    thresholds = QualityThresholds(
        min_snr=args.min_snr,
        ood_quantile=args.ood_quantile,
        max_disagreement=args.max_disagreement,
    )
    return InferOptions(
        models=args.model,
        fmt=args.format,
        batch_size=args.batch_size,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        thresholds=thresholds,
        allow_fingerprint_mismatch=args.allow_fingerprint_mismatch,
        column_style=args.column_style,
        precision=args.precision,
        compile=args.compile,
        **extra,
    )
