"""torchvision downloads, used only when a dataset is not found on disk.

Offline, a download fails fast (short socket timeout) and becomes a one-line ``DatasetUnavailable``.
Set BPFREE_NO_DOWNLOAD=1 to never try.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .base import DatasetUnavailable

DOWNLOAD_ROOT = Path("data")
CONNECT_TIMEOUT_S = 10  # offline machines fail DNS at once; this bounds a black-holed network


def download_with_torchvision(class_name: str, name: str, looked_for: str, how_to_get: str, **kwargs):
    """``torchvision.datasets.<class_name>(root=data, download=True, **kwargs)``, or a one-line error."""
    missing = f"dataset {name!r} not found: looked for {looked_for}; to get it: {how_to_get}"
    if os.environ.get("BPFREE_NO_DOWNLOAD"):
        raise DatasetUnavailable(missing + " (downloads disabled by BPFREE_NO_DOWNLOAD)")
    import torchvision.datasets as tvd

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(CONNECT_TIMEOUT_S)
    try:
        dataset = getattr(tvd, class_name)(root=str(DOWNLOAD_ROOT), download=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any network failure means "not available here"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetUnavailable(f"{missing} (download failed: {reason})") from None
    finally:
        socket.setdefaulttimeout(old)
    return dataset
