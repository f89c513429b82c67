"""The error shapes every layer raises, so the CLI and the HTTP service can answer with one 422 format.

`loc` follows FastAPI/pydantic: a path of field names and indexes, e.g. ("body", "rank") for a request field or
("body", "training_data_url", "clips/a.mp4") for a file inside the archive.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ErrorItem:
    loc: tuple[str | int, ...]
    msg: str

    def to_json(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg}


@dataclass(frozen=True)
class Skip:
    """A sample left out of training, with the reason (named in `check` output and in result.json)."""

    name: str
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "reason": self.reason}


class RequestError(Exception):
    """The request or its dataset is unusable (HTTP 422). Raised before any costly work; bills 0 units."""

    status = 422

    def __init__(self, errors: list[ErrorItem] | ErrorItem, skipped: list[Skip] | None = None):
        self.errors = [errors] if isinstance(errors, ErrorItem) else list(errors)
        self.skipped = list(skipped or [])
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in self.errors))

    @classmethod
    def field(cls, name: str, msg: str) -> "RequestError":
        return cls(ErrorItem(("body", name), msg))

    @classmethod
    def file(cls, archive_path: str, msg: str) -> "RequestError":
        """An error about one file of the dataset archive, named by its path inside the archive."""
        return cls(ErrorItem(("body", "training_data_url", archive_path), msg))

    def to_json(self) -> dict:
        return {
            "accepted": False,
            "status": self.status,
            "errors": [e.to_json() for e in self.errors],
            "skipped": [s.to_json() for s in self.skipped],
        }


@dataclass
class Diagnostics:
    """Non-fatal findings collected along the way (skips and warnings)."""

    skipped: list[Skip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(Skip(name, reason))

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
