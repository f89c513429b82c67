"""Caps applied while fetching and unpacking a user's dataset archive.

The defaults suit the CLI (a trusted operator on their own machine). The HTTP service builds its own instance with
`allow_private_addresses=False`, which also refuses local paths and file:// URLs (see `local_paths_allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IntakeLimits:
    max_download_bytes: int = 20 * 2**30  # archive size cap
    max_extracted_bytes: int = 50 * 2**30  # total uncompressed bytes on disk (all entries, nested zips included)
    max_files: int = 10_000  # entries extracted (nested zips and their entries included)
    max_nesting: int = 3  # how deep zips inside zips are expanded
    allow_private_addresses: bool = True  # False: refuse loopback/private/link-local/reserved hosts
    timeout_s: float = 60.0  # network inactivity timeout (connect, and each read), not a cap on the whole transfer
    # Whether plain local paths and file:// URLs may be fetched. None: follow `allow_private_addresses` (a service
    # that refuses private hosts must not read its own disk either).
    allow_local_paths: bool | None = None

    @property
    def local_paths_allowed(self) -> bool:
        return self.allow_private_addresses if self.allow_local_paths is None else self.allow_local_paths


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; exact powers print without decimals ('20 GiB')."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
