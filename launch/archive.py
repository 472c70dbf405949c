"""A run directory as text, and back: how `disttrain fetch` copies a run off a cluster.

The run directory of a submitted job lives with its driver on the cluster's head, and the
cluster has no shared disk. Ray's Jobs API (the one door the user's machine has to the
head) carries text: a job's logs. So `disttrain pack RUN` (run as a small job on the head)
prints the folder as a gzipped tar in base64 lines between two marker lines that carry
its size and sha256, and `unpack` finds that block in the logs, checks it and extracts
it. Both sides are here so the format is written once.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from pathlib import Path

BEGIN, END = "DISTTRAIN-ARCHIVE-BEGIN", "DISTTRAIN-ARCHIVE-END"
LINE = 76  # base64 characters per line, as MIME writes them
_HEADER = re.compile(rf"^{BEGIN} bytes=(\d+) sha256=([0-9a-f]{{64}})$")


class ArchiveError(Exception):
    """The archive is missing, damaged or unsafe; the message says which."""


def pack(run_dir: Path) -> str:
    """run_dir as the text block unpack reads: BEGIN header, base64 lines, END."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(run_dir.rglob("*")):
            # a write in progress (the driver's atomic temporaries) is not part of the run
            if path.is_file() and not path.name.startswith(".") and ".tmp" not in path.name:
                tar.add(path, arcname=str(path.relative_to(run_dir)), recursive=False)
    data = buffer.getvalue()
    encoded = base64.b64encode(data).decode("ascii")
    lines = [encoded[i:i + LINE] for i in range(0, len(encoded), LINE)]
    header = f"{BEGIN} bytes={len(data)} sha256={hashlib.sha256(data).hexdigest()}"
    return "\n".join([header, *lines, END]) + "\n"


def unpack(text: str, dest: Path) -> list[str]:
    """Find pack's block in text (e.g. a job's logs), check its size and sha256, and
    extract it into dest (created; must be new or empty). The extracted names, sorted."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line.strip())]
    if not starts:
        raise ArchiveError("no archive in the output (the pack job printed none)")
    start = starts[-1]
    size, digest = _HEADER.match(lines[start].strip()).groups()
    try:
        end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == END)
    except StopIteration:
        raise ArchiveError("the archive is cut short (no end line)") from None
    data = base64.b64decode("".join(line.strip() for line in lines[start + 1:end]))
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        raise ArchiveError(f"the archive is damaged: {len(data)} bytes with sha256 "
                           f"{hashlib.sha256(data).hexdigest()[:12]}..., expected {size} "
                           f"bytes with {digest[:12]}...")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            # "data": regular files and folders only, nothing outside dest, no device or link
            tar.extractall(dest, filter="data")
            return sorted(member.name for member in tar.getmembers())
    except tarfile.TarError as error:
        raise ArchiveError(f"the archive is unsafe or unreadable: {error}") from None
