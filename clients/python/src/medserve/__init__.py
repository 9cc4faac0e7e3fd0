"""Python client for medserve.

* :class:`ItemDataset`: a split's items, map-style (``ds[i] -> (image, label)``).
* :class:`BatchLoader`: the server's batch plan for one rank, an iterable (a
  ``torch.utils.data.IterableDataset`` when torch is installed) for ``DataLoader(loader,
  batch_size=None, num_workers=N)``, with ``set_epoch`` and an exact ``state_dict`` /
  ``load_state_dict``.
* :func:`fetch_items`: named items as one batch.

Credentials: ``MEDSERVE_API_KEY`` (or ``api_key=``) is sent as ``Authorization: Bearer``.
"""

from ._http import API_KEY_ENV, Client, MedserveError
from ._torch import HAVE_TORCH
from .dataset import ItemDataset, list_items
from .loader import BatchLoader, fetch_items, state_after

__version__ = "0.1.0"

__all__ = [
    "API_KEY_ENV",
    "BatchLoader",
    "Client",
    "HAVE_TORCH",
    "ItemDataset",
    "MedserveError",
    "fetch_items",
    "list_items",
    "state_after",
]
