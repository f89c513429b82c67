"""metrics.jsonl: one JSON object per line, appended by one writer while the service, the page and the loss-curve
plot read it.

A row is one `write` of its whole line, so a reader sees it whole or sees a half-written last line; a line that is
not a JSON object (half written, or damaged) is skipped rather than failing the reader. A restarted run rewrites the
file without the rows it is about to log again (`truncate_from`), replacing it by rename so readers never see a
partial rewrite. A leaf module: nothing from the rest of ltxtrain.
"""

from __future__ import annotations

import json
import os

_TAIL_BLOCK = 65536  # bytes read at a time from the end when only the last rows are wanted


def append(path: str | os.PathLike, row: dict) -> None:
    """Append `row` as one line, in one O_APPEND write, so a concurrent reader sees it whole or not yet."""
    data = (json.dumps(row) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a writer died mid-row: end its line so this row does not join it
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def _row(line: str | bytes) -> dict | None:
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):  # half-written last line, or a damaged one
        return None
    return row if isinstance(row, dict) else None


def read_rows(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The file's rows in order (the first `limit` of them when given); [] when it does not exist yet."""
    rows: list[dict] = []
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return rows
    with fh:
        for line in fh:
            if limit is not None and len(rows) >= limit:
                break
            if (row := _row(line)) is not None:
                rows.append(row)
    return rows


def tail(path: str | os.PathLike, n: int) -> list[dict]:
    """The last `n` rows in order, reading back from the end only as far as needed."""
    if n <= 0:
        return []
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return []
    with fh:
        end = fh.seek(0, os.SEEK_END)
        start, buf = end, b""
        while True:
            start = max(0, start - _TAIL_BLOCK)
            fh.seek(start)
            buf = fh.read(end - start)
            # the first line may be cut by the block boundary: only trust it once the block reaches the file start
            lines = buf.split(b"\n") if start == 0 else buf.split(b"\n")[1:]
            rows = [r for line in lines if (r := _row(line)) is not None]
            if len(rows) >= n or start == 0:
                return rows[-n:]


def last_row(path: str | os.PathLike) -> dict | None:
    """The last complete row, or None (no file, or no complete row yet)."""
    rows = tail(path, 1)
    return rows[0] if rows else None


def _step(row: dict) -> float | None:
    step = row.get("step")
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def last_step(path: str | os.PathLike) -> int | float:
    """The largest step logged so far (0 for an empty or missing file)."""
    return max((s for r in read_rows(path) if (s := _step(r)) is not None), default=0)


def truncate_from(path: str | os.PathLike, step: int | float) -> None:
    """Drop the rows at `step` and after (a run went back to a checkpoint): rewrite to a temp name, then rename."""
    kept = [r for r in read_rows(path) if (s := _step(r)) is None or s < step]
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
