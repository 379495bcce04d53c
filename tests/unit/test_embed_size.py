"""The inbox element stays small: the issue's bound is under 15 kB gzipped, as served
(service/notify/embed.py gzips the file once and serves those bytes)."""

from __future__ import annotations

import gzip

from service.notify import embed

MAX_GZIPPED_BYTES = 15_000


def test_the_served_script_stays_under_15_kb_gzipped() -> None:
    assert gzip.decompress(embed.GZIPPED) == embed.FILE.read_bytes()
    size = len(embed.GZIPPED)
    assert size < MAX_GZIPPED_BYTES, f"{size} bytes gzipped: over the bound, make it smaller"
    # Gzip at its default level too, as a CDN or proxy in front might serve it.
    assert len(gzip.compress(embed.SCRIPT)) < MAX_GZIPPED_BYTES
