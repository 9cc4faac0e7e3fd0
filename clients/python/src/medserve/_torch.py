"""torch when it is installed, plain Python otherwise."""

from __future__ import annotations

try:  # pragma: no cover - which branch runs depends on the environment
    import torch
    from torch.utils.data import Dataset as MapBase
    from torch.utils.data import IterableDataset as IterableBase
    from torch.utils.data import get_worker_info
except ImportError:  # numpy only
    torch = None

    class MapBase:  # type: ignore[no-redef]
        pass

    class IterableBase:  # type: ignore[no-redef]
        pass

    def get_worker_info():  # type: ignore[no-redef]
        return None

HAVE_TORCH = torch is not None

__all__ = ["torch", "HAVE_TORCH", "MapBase", "IterableBase", "get_worker_info"]
