"""Where commands write (`study.outputs`): a regular file or a new path, written whole, never through a link,
a FIFO or a device; the report and notebook commands refuse such an `--out` before they read anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from study.outputs import check_output_file, check_output_folder, write_atomically

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis import test_metrics, trial_params, write_trial  # noqa: E402


def test_a_regular_file_is_replaced_whole_and_a_new_path_made(tmp_path):
    old, new = tmp_path / "old.txt", tmp_path / "sub" / "new.bin"
    old.write_text("before")
    write_atomically({old: "after", new: b"\x00\x01"})
    assert old.read_text() == "after" and new.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["new.bin", "old.txt", "sub"]


@pytest.mark.parametrize("kind", ["link-to-file", "link-to-dir", "fifo", "dir"])
def test_a_target_that_is_not_a_regular_file_is_refused_and_nothing_is_written(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "target"
    if kind == "link-to-file":
        target.symlink_to(victim)
    elif kind == "link-to-dir":
        target.symlink_to(tmp_path)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    first = tmp_path / "first.txt"
    with pytest.raises(ValueError, match=r"--out .*target is a (symbolic link|FIFO|directory)"):
        write_atomically({first: "one", target: "two"}, flag="--out")
    assert victim.read_text() == "keep me" and not first.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_folder_is_a_folder_or_a_new_path(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    check_output_folder("--out", tmp_path / "real")
    check_output_folder("--out", tmp_path / "new" / "deeper")
    check_output_folder("--out", tmp_path / "link")  # the folder the user names may be a link
    with pytest.raises(ValueError, match="link is a symbolic link"):
        check_output_folder("--out", tmp_path / "link", link_ok=False)  # never one inside it
    with pytest.raises(ValueError, match="file is a regular file; give a folder"):
        check_output_folder("--out", tmp_path / "file")
    with pytest.raises(ValueError, match="file is not a directory"):
        check_output_file("--out", tmp_path / "file" / "x.json")
    with pytest.raises(ValueError, match="is a character device"):
        check_output_folder("--out", "/dev/null")


def _study(root: Path) -> None:
    write_trial(root / "lora-main", trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2))


@pytest.mark.parametrize("planted", ["report.html", "report.md", "figures", "generations", "tables"])
def test_the_report_refuses_a_link_planted_in_its_folder_before_reading_anything(tmp_path, capsys, planted):
    from analysis.report import main

    _study(tmp_path / "results")
    victim = tmp_path / "victim"
    victim.mkdir() if planted in ("figures", "generations", "tables") else victim.write_text("keep me")
    out = tmp_path / "results" / "report"  # a report written inside the results folder
    out.mkdir()
    (out / planted).symlink_to(victim)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "results"), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"--out {out / planted} is a symbolic link" in err
    assert sorted(p.name for p in out.iterdir()) == [planted]
    assert (
        victim.is_dir() and not list(victim.iterdir()) if victim.is_dir() else victim.read_text() == "keep me"
    )


@pytest.mark.parametrize("module", ["analysis.report", "analysis.notebook"])
def test_an_out_that_is_a_fifo_is_refused_in_one_line(tmp_path, capsys, module):
    import importlib

    _study(tmp_path / "results")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main([str(tmp_path / "results"), "--out", str(tmp_path / "pipe")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"--out {tmp_path / 'pipe'} is a FIFO (named pipe)" in err
