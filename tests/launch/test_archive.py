"""fetch's wire format (launch/archive.py): a run directory survives the trip through a
job's logs byte for byte, and a damaged, cut or hostile archive is refused."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import pytest

from disttrain.launch.archive import BEGIN, END, ArchiveError, pack, unpack
from disttrain.launch.cli import main


def a_run(root):
    (root / "checkpoints" / "step-00000010").mkdir(parents=True)
    (root / "status.json").write_text('{"state": "done"}')
    (root / "checkpoints" / "step-00000010" / "state.npz").write_bytes(bytes(range(256)) * 40)
    (root / "checkpoints" / ".step-00000020.tmp").mkdir()  # a write in progress
    return root


def test_round_trip_among_other_log_lines_is_byte_identical(tmp_path):
    run = a_run(tmp_path / "run")
    logs = "Running entrypoint for job x\n" + pack(run) + "job finished\n"
    names = unpack(logs, tmp_path / "copy")
    assert names == ["checkpoints/step-00000010/state.npz", "status.json"]
    for name in ("status.json", "checkpoints/step-00000010/state.npz"):
        assert (tmp_path / "copy" / name).read_bytes() == (run / name).read_bytes()
    assert not (tmp_path / "copy" / "checkpoints" / ".step-00000020.tmp").exists()


def test_a_damaged_or_cut_archive_is_refused(tmp_path):
    text = pack(a_run(tmp_path / "run"))
    lines = text.splitlines()
    flipped = lines[1][:5] + ("A" if lines[1][5] != "A" else "B") + lines[1][6:]
    with pytest.raises(ArchiveError, match="damaged"):
        unpack("\n".join([lines[0], flipped, *lines[2:]]), tmp_path / "a")
    with pytest.raises(ArchiveError, match="cut short"):
        unpack("\n".join(lines[:-1]), tmp_path / "b")
    with pytest.raises(ArchiveError, match="no archive"):
        unpack("just a log\n", tmp_path / "c")


def test_an_archive_reaching_outside_dest_is_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    data = buffer.getvalue()
    text = "\n".join([f"{BEGIN} bytes={len(data)} sha256={hashlib.sha256(data).hexdigest()}",
                      base64.b64encode(data).decode(), END])
    with pytest.raises(ArchiveError, match="outside"):
        unpack(text, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


def test_pack_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["pack", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]
