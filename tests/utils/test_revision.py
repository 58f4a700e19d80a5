"""The source revision recorded in catalogues (rrnet.utils.revision)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rrnet.utils.revision import PACKAGE, source_commit


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_a_checkout_names_its_commit_and_a_wheel_none(tmp_path: Path) -> None:
    """The version stayed 0.1.0 for hundreds of commits: a catalogue could not say which
    code wrote it (found by a reproducibility audit). Oracle: git's own HEAD file."""
    root = PACKAGE.parent.parent
    if not (root / ".git").exists():
        pytest.skip("rrnet is not running from a git checkout here")
    head = (root / ".git" / "HEAD").read_text().strip()
    if head.startswith("ref: "):
        ref = head[5:]
        loose = root / ".git" / ref
        head = loose.read_text().strip() if loose.exists() else next(
            line.split()[0] for line in (root / ".git" / "packed-refs").read_text().splitlines()
            if line.endswith(" " + ref)
        )  # fmt: skip
    assert source_commit().split("+")[0] == head
    # a package folder that is not python/rrnet of an rrnet repository: nothing recorded
    site = tmp_path / "site-packages" / "rrnet"
    site.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert source_commit(site) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_an_unpacked_sdist_inside_another_repository_records_no_commit(tmp_path: Path) -> None:
    """An sdist has python/rrnet and crates/rrnet-core but no .git: git walked up to the
    enclosing repository and its commit was recorded as rrnet's (packaging review)."""
    outer = tmp_path / "outer"
    tree = outer / "rrnet-0.1.0"
    (tree / "python" / "rrnet").mkdir(parents=True)
    (tree / "crates" / "rrnet-core").mkdir(parents=True)
    git = ["git", "-C", str(outer), "-c", "user.name=x", "-c", "user.email=x@y"]
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    (outer / "a").write_text("a")
    subprocess.run([*git, "add", "a"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    assert source_commit(tree / "python" / "rrnet") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def _checkout(tree: Path) -> tuple[list[str], str]:
    """A one-commit repository laid out as rrnet's at ``tree``: its git call, its HEAD."""
    (tree / "python" / "rrnet").mkdir(parents=True)
    (tree / "crates" / "rrnet-core").mkdir(parents=True)
    (tree / "a").write_text("a")
    git = ["git", "-C", str(tree), "-c", "user.name=x", "-c", "user.email=x@y"]
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run([*git, "add", "a"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    return git, head.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_a_checkout_whose_path_has_a_space_names_its_commit(tmp_path: Path) -> None:
    tree = tmp_path / "my work" / "rrnet"
    _, head = _checkout(tree)
    assert source_commit(tree / "python" / "rrnet") == head


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="giving the tree to another user needs root")
def test_another_users_checkout_names_its_commit(tmp_path: Path) -> None:
    """git refuses a repository of another owner ("dubious ownership"): a group running
    one member's checkout wrote catalogues without rrnet.commit."""
    tree = tmp_path / "theirs" / "rrnet"
    git, head = _checkout(tree)
    for path in [tree, *tree.rglob("*")]:
        os.lchown(path, 4321, 4321)  # a user who is not this one
    refused = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr  # git's own rule
    assert source_commit(tree / "python" / "rrnet") == head
