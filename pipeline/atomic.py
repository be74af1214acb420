"""Durable writes: flush a file or a folder to disk before it becomes the current version."""

from __future__ import annotations

import os
from pathlib import Path


def fsync(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to disk (power loss, not just a kill)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
