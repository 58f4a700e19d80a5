"""``python -m rrnet.demo`` (what ``make demo`` runs) ends like the commands: one line,
never a traceback."""

from __future__ import annotations

from rrnet import demo


def test_an_unusable_output_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """A --out under a file (or a folder this user cannot write, a missing TMPDIR) ended
    in a traceback from pathlib."""
    monkeypatch.delenv("RRNET_DEBUG", raising=False)
    (tmp_path / "file").write_text("")
    assert demo.main(["--out", str(tmp_path / "file" / "demo"), "--stars", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rrnet-demo: error: ") and err.count("\n") == 1, err
    assert f"{tmp_path / 'file'} is a file, not a folder" in err


def test_unusable_sizes_are_refused_in_one_line(capsys):
    assert demo.main(["--stars", "5"]) == 2
    assert capsys.readouterr().err == (
        "rrnet-demo: error: need --stars >= 20, --epochs >= 1, --members >= 1\n"
    )
    assert demo.main(["--stars", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rrnet-demo: error: argument --stars") and err.count("\n") == 1
