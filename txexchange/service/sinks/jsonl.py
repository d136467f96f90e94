"""The JSON lines sink: one record per line, rotated by size and/or age.

Sits at the end of the flow.  Records are those of
:func:`~txexchange.service.sinks.base.record_for` (prices and amounts stay the
exchange's decimal strings).  Writes go to a buffered file, flushed every
second by the service and on close, so a clean stop leaves no partial line.
With ``rotate_mb``/``rotate_s`` the file is renamed to
``STEM.YYYYmmddTHHMMSS[.N]SUFFIX`` and a new one started; rotation only ever
happens between records.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from twisted.logger import Logger

from txexchange.codec import dumps
from txexchange.service.sinks.base import Sink

__all__ = ["JsonLinesSink"]

log = Logger()


class JsonLinesSink(Sink):
    """Appends one JSON document per update to ``path``.

    :param rotate_mb: start a new file once this one holds this many MB.
    :param rotate_s: start a new file once this one is this many seconds old.
    :param clock: what ``rotate_s`` is measured with (``seconds()``).
    """

    kind = "jsonl"

    def __init__(
        self,
        path: str | Path,
        depth: int = 10,
        *,
        rotate_mb: float | None = None,
        rotate_s: float | None = None,
        queue: int = 10_000,
        clock: Any = None,
    ) -> None:
        super().__init__(depth=depth, queue=queue)
        self.path = Path(path)
        self.rotate_bytes = int(rotate_mb * 1_000_000) if rotate_mb else None
        self.rotate_s = rotate_s
        self.rotated: list[Path] = []
        self._clock = clock
        self._file: IO[bytes] | None = None
        self._size = 0
        self._opened_at = 0.0

    @property
    def name(self) -> str:
        return f"jsonl:{self.path}"

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.time()

    def _open(self) -> None:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=1 << 16)
        self._size = self._file.tell()
        self._opened_at = self._now()

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        for record in batch:
            if self._file is None:
                return
            if self._size and (
                (self.rotate_bytes is not None and self._size >= self.rotate_bytes)
                or (self.rotate_s is not None and self._now() - self._opened_at >= self.rotate_s)
            ):
                self._rotate()
            line = dumps(record) + b"\n"
            self._file.write(line)
            self._size += len(line)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._now()))
        target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.stem}.{stamp}.{n}{self.path.suffix}")
            n += 1
        self.path.rename(target)
        self.rotated.append(target)
        log.info("{sink}: rotated to {target}", sink=self.name, target=str(target))
        self._open()

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
