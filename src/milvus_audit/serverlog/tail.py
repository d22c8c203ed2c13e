"""Reading log files line by line, once or following them like `tail -F`, resumable.

A `FileCursor` is where reading a path stands: the file's identity (device and inode) and
the byte offset after the last whole line handed out. `Tailer.lines()` yields
`(path, line number, offset, text)` for each whole line; a trailing partial line is held
back until its newline arrives (or, without `follow`, given at the end). Following, it
notices:

- **rotation** (the path now names another file): the old file is read to its end, then
  the new one from its start;
- **truncation** (the file is shorter than the offset): reading restarts at 0.

The cursors are saved in a small JSON state file (written atomically) after the lines
before them have been emitted, so a restart resumes where the last run's emitted lines
end: every line at least once. A file rotated away while the reader was down is found
again in its directory by its inode, and read to its end first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileCursor", "Line", "Tailer", "load_state", "save_state"]

_CHUNK = 1 << 20


@dataclass
class FileCursor:
    path: str
    device: int = 0
    inode: int = 0
    offset: int = 0
    line: int = 0  # lines read so far (for file:line reports)


@dataclass(frozen=True, slots=True)
class Line:
    path: str
    number: int
    offset: int  # of the line's first byte
    end: int  # after the line and its newline: where reading resumes
    inode: int
    text: str


def load_state(path: str | os.PathLike[str] | None) -> dict[str, FileCursor]:
    if path is None or not os.path.exists(path):
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return {name: FileCursor(name, int(c["device"]), int(c["inode"]), int(c["offset"]), int(c.get("line", 0)))
                for name, c in data.get("files", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an ingest state file ({exc})") from None


def save_state(path: str | os.PathLike[str], cursors: dict[str, FileCursor]) -> None:
    """Write the state atomically (a temporary file renamed over the old one, fsynced)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    body = {"version": 1, "files": {name: {"device": c.device, "inode": c.inode, "offset": c.offset,
                                           "line": c.line} for name, c in cursors.items()}}
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


class _Open:
    """One open file being read: its handle, identity, position and the partial line held back."""

    def __init__(self, path: str, handle: object, stat: os.stat_result, offset: int, line: int) -> None:
        self.path = path
        self.handle = handle
        self.device = stat.st_dev
        self.inode = stat.st_ino
        self.offset = offset  # after the last whole line handed out
        self.line = line
        self.pending = b""


class Tailer:
    """Lines of `paths`, from the saved cursors on; `follow` keeps reading as they grow."""

    def __init__(self, paths: list[str], cursors: dict[str, FileCursor] | None = None, *,
                 follow: bool = False, poll_s: float = 0.25) -> None:
        self.paths = [str(p) for p in paths]
        self.cursors = dict(cursors or {})
        self.follow = follow
        self.poll_s = poll_s
        self.stopped = False
        self._open: dict[str, _Open] = {}
        self._backlog: list[Line] = []

    def stop(self) -> None:
        self.stopped = True

    def backlog_bytes(self) -> int:
        """Bytes still to read in the files as they are now (for progress)."""
        total = 0
        for path in self.paths:
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            cursor = self.cursors.get(path)
            total += max(0, size - (cursor.offset if cursor else 0))
        return total

    def cursor(self, path: str) -> FileCursor:
        return self.cursors.setdefault(path, FileCursor(path))

    def commit(self, line: Line) -> None:
        """Everything up to and including `line` has been emitted: the cursor moves past it."""
        cursor = self.cursor(line.path)
        cursor.inode = line.inode
        cursor.offset = line.end
        cursor.line = line.number
        opened = self._open.get(line.path)
        if opened is not None and opened.inode == line.inode:
            cursor.device = opened.device

    # -- reading -------------------------------------------------------------------------
    def _open_path(self, path: str) -> _Open | None:
        try:
            handle = open(path, "rb")  # kept open across reads, closed on rotation
        except OSError:
            return None
        stat = os.fstat(handle.fileno())
        cursor = self.cursors.get(path)
        offset, line = 0, 0
        if cursor is not None and cursor.inode == stat.st_ino and cursor.device in (0, stat.st_dev):
            offset, line = cursor.offset, cursor.line
            if stat.st_size < offset:  # truncated while we were away
                offset, line = 0, 0
        elif cursor is not None and cursor.inode:
            self._drain_rotated_away(path, cursor)
        handle.seek(offset)
        self.cursors[path] = FileCursor(path, stat.st_dev, stat.st_ino, offset, line)
        return _Open(path, handle, stat, offset, line)

    def _drain_rotated_away(self, path: str, cursor: FileCursor) -> None:
        """The file the saved cursor names was rotated away while we were down: find it in
        the same directory by its inode and queue the rest of its lines."""
        directory = os.path.dirname(os.path.abspath(path))
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.st_ino == cursor.inode and entry.is_file() and stat.st_size >= cursor.offset:
                with open(entry.path, "rb") as handle:
                    handle.seek(cursor.offset)
                    rotated = _Open(path, handle, stat, cursor.offset, cursor.line)
                    self._backlog.extend(self._read(rotated, final=True))
                return

    def _read(self, opened: _Open, *, final: bool) -> Iterator[Line]:
        handle = opened.handle
        while True:
            chunk = handle.read(_CHUNK)  # type: ignore[attr-defined]
            if not chunk:
                break
            data = opened.pending + chunk
            start = 0
            while True:
                newline = data.find(b"\n", start)
                if newline < 0:
                    break
                opened.line += 1
                end = opened.offset + newline + 1 - start
                yield Line(opened.path, opened.line, opened.offset, end,
                           opened.inode, data[start:newline].decode("utf-8", "surrogateescape"))
                opened.offset = end
                start = newline + 1
            opened.pending = data[start:]
        if final and opened.pending:
            opened.line += 1
            end = opened.offset + len(opened.pending)
            text = opened.pending.decode("utf-8", "surrogateescape")
            opened.pending = b""
            yield Line(opened.path, opened.line, opened.offset, end, opened.inode, text)
            opened.offset = end

    def poll(self) -> Iterator[Line]:
        """The lines there are now (one pass over the files); with `follow`, also what
        rotation and truncation uncovered. Without `follow`, each file to its end."""
        for path in self.paths:
            if path not in self._open:
                opened = self._open_path(path)
                if opened is not None:
                    self._open[path] = opened
                elif not self.follow:
                    raise FileNotFoundError(2, "No such file or directory", path)
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            yield from backlog
        for path in self.paths:
            opened = self._open.get(path)
            if opened is not None:
                yield from self._read(opened, final=not self.follow)
            if self.follow:
                yield from self._check_rotation(path)

    def lines(self) -> Iterator[Line]:
        """Every whole line; with `follow`, until `stop()`."""
        try:
            while True:
                yield from self.poll()
                if not self.follow or self.stopped:
                    break
                time.sleep(self.poll_s)
                if self.stopped:
                    break
        finally:
            self.close()

    def close(self) -> None:
        for opened in self._open.values():
            opened.handle.close()  # type: ignore[attr-defined]
        self._open.clear()

    def _check_rotation(self, path: str) -> Iterator[Line]:
        opened = self._open.get(path)
        try:
            stat = os.stat(path)
        except OSError:
            return  # rotated away and not yet recreated: keep the old handle
        if opened is None:
            opened = self._open_path(path)
            if opened is not None:
                self._open[path] = opened
                yield from self._read(opened, final=False)
            return
        if stat.st_ino != opened.inode or stat.st_dev != opened.device:
            yield from self._read(opened, final=True)  # the rest of the rotated file
            opened.handle.close()  # type: ignore[attr-defined]
            self.cursors.pop(path, None)
            fresh = self._open_path(path)
            if fresh is not None:
                self._open[path] = fresh
                yield from self._read(fresh, final=False)
            else:
                del self._open[path]
        elif stat.st_size < opened.offset + len(opened.pending):  # truncated in place (copytruncate)
            opened.handle.seek(0)  # type: ignore[attr-defined]
            opened.offset, opened.line, opened.pending = 0, 0, b""
            yield from self._read(opened, final=False)
