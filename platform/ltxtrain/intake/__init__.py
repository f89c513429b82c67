"""Fetching and unpacking user dataset archives (bounded, safe, all-or-nothing)."""

from .archive import ExtractedFile, extract_archive, require_nonempty
from .fetch import fetch
from .limits import IntakeLimits

__all__ = ["ExtractedFile", "IntakeLimits", "extract_archive", "fetch", "require_nonempty"]
