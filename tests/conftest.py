"""Shared test helpers. Real media from public projects lives in ../shared/media when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def shared_media_files(*suffixes: str) -> list[Path]:
    """Files of ../shared/media with one of ``suffixes`` (all when none), or [] when it is absent."""
    if not SHARED_MEDIA.is_dir():
        return []
    return sorted(p for p in SHARED_MEDIA.iterdir() if p.is_file() and (not suffixes or p.suffix.lower() in suffixes))


@pytest.fixture
def shared_media() -> Path:
    if not SHARED_MEDIA.is_dir():
        pytest.skip("../shared/media is not present")
    return SHARED_MEDIA
