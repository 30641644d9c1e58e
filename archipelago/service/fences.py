"""The mapper peer's fences (docs/fencing.md): file fence files or the RADOS fence objects."""

from __future__ import annotations

import os
from typing import Any

from archipelago.service.direct_io import DirectIO


def fence_files(cfg: Any, fast: DirectIO | None = None) -> Any:
    """The fence files of the configured file blocker (None for other backends); the
    direct I/O's own when there is one (one descriptor cache per process)."""
    if cfg.blocker.backend != "file":
        return None
    if fast is not None:
        return fast.blocker.fences
    from archipelago.blocker.fence import FenceFiles

    return FenceFiles(os.path.abspath(cfg.blocker.file.path))


def rados_fence(cfg: Any, run_dir: str) -> Any:
    """The mapper peer's RADOS fence (None for other backends): its own client for the
    fence objects; the writers it registers are its blocker peers (docs/fencing.md)."""
    if cfg.blocker.backend != "rados":
        return None
    from archipelago.blocker import open_blocker
    from archipelago.blocker.rados_fence import CLIENTS_DIR, PublishedAddrs, RadosFence

    return RadosFence(open_blocker(cfg), PublishedAddrs(os.path.join(run_dir, CLIENTS_DIR)),
                      blk_writes=False)
