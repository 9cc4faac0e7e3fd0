"""`BatchLoader`: medserve's batch plan as an iterable, for torch's DataLoader or on its own."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np

from ._http import Client
from ._torch import HAVE_TORCH, IterableBase, get_worker_info, torch
from .dataset import split_path

STATE_KEYS = ("epoch", "batch", "batch_size", "seed", "world_size", "rank")


class BatchLoader(IterableBase):
    """The batches of one rank of a split's batch plan, in plan order.

    The server fixes the order: epoch ``e`` is a permutation of the split drawn from
    ``(seed, e)`` (listing order without a seed); global step ``g`` covers positions
    ``[g*B*W, (g+1)*B*W)`` and rank ``r`` takes ``B`` of them from ``g*B*W + r*B``. This object
    asks ``GET .../batches`` for the plan (``len(loader)`` is its ``batches``: steps per epoch)
    and ``GET .../batches/{b}`` for each batch, with ``params`` (image or volume parameters:
    ``size=(64, 64)``, ``scale="minmax"``, ``rand_flip=0.5``, ``rand_rotate=0.26``, ...) passed
    on. Random parameters need ``seed``.

    Each batch is a dict: ``image`` float32 ``(B, C, H, W)`` (or ``(B, C, X, Y, Z)``),
    ``label`` int64 class indices ``(B,)`` (or uint8 masks ``(B, 1, X, Y, Z)``), ``pad`` bool
    ``(B,)`` (samples repeated from the start of the order to fill the last step when
    ``drop_last=False``), ``rand_flip``/``rand_rotate`` when asked for (what each sample
    drew; NaN angle when not fired), as torch tensors when torch is installed (``id``: a list
    of str) or numpy arrays otherwise (``as_torch=False`` forces numpy); plus ``epoch`` and
    ``batch``, plain ints: which batch of the plan this is.

    **With torch's DataLoader** pass ``batch_size=None`` (batches come ready-made) and any
    ``num_workers``: worker ``w`` of ``n`` takes batches ``start + w``, ``start + w + n``, ...
    so DataLoader's in-order round robin yields ``start, start + 1, ...``. Keep
    ``persistent_workers=False`` (the default): workers copy this object when an iteration
    starts, which is how ``set_epoch`` and ``load_state_dict`` reach them.

    **Epochs**: call ``set_epoch(e)`` before each epoch, as with ``DistributedSampler``.

    **Resuming** is exact, to the batch, with or without workers: ``state_dict(after=batch)``
    is the state after a batch you received (from its ``epoch`` and ``batch``); in the main
    process without workers ``state_dict()`` alone gives the same (this object counts what it
    handed out). Save it with the model; later ``load_state_dict(state)`` then
    ``set_epoch(state["epoch"])`` and iterate: the first batch is the one after. A state
    loads into a loader with another ``world_size``/``batch_size`` when the saved position is
    a whole number of its steps (same ``B*W``: the same global step).
    """

    def __init__(
        self,
        url: str,
        dataset: str,
        split: str,
        batch_size: int,
        seed: Optional[int] = None,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        *,
        class_: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Client] = None,
        as_torch: Optional[bool] = None,
        **params: Any,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        self.client = client or Client(url, api_key=api_key)
        self.dataset = dataset
        self.split = split
        self.batch_size = int(batch_size)
        self.seed = None if seed is None else int(seed)
        self.epoch = int(epoch)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.params = dict(params)
        # `class` is a keyword in Python: class_=, or **{"class": ...}.
        self.class_ = self.params.pop("class", None) if class_ is None else class_
        if as_torch and not HAVE_TORCH:
            raise ImportError("as_torch=True needs torch")
        self.as_torch = HAVE_TORCH if as_torch is None else bool(as_torch)
        self._plan: Optional[dict] = None
        # The batch the next iteration starts at (set by load_state_dict, reset by set_epoch).
        self._start = 0
        # (epoch, next batch) after the last batch this process's own iteration handed out.
        self._pos = (self.epoch, 0)

    def __repr__(self) -> str:
        return (f"BatchLoader({self.client.url!r}, {self.dataset!r}, {self.split!r}, "
                f"batch_size={self.batch_size}, seed={self.seed}, epoch={self.epoch}, "
                f"rank={self.rank}, world_size={self.world_size}, drop_last={self.drop_last})")

    # The plan -----------------------------------------------------------------------------

    def _plan_query(self) -> Dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
            "class": self.class_,
        }

    @property
    def plan(self) -> dict:
        """``GET .../batches``: samples, batches (steps per epoch), padded, order, ..."""
        if self._plan is None:
            self._plan = self.client.get_json(
                split_path(self.dataset, self.split) + "/batches", self._plan_query()
            )
        return self._plan

    def __len__(self) -> int:
        return int(self.plan["batches"])

    # Batches ------------------------------------------------------------------------------

    def batch_query(self, epoch: Optional[int] = None) -> Dict[str, Any]:
        """The query parameters of this loader's batch requests."""
        return {
            **self._plan_query(),
            "epoch": self.epoch if epoch is None else int(epoch),
            "rank": self.rank,
            **self.params,
        }

    def fetch(self, b: int, epoch: Optional[int] = None) -> Dict[str, Any]:
        """Batch ``b`` of this rank in ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else int(epoch)
        z = self.client.get_npz(
            split_path(self.dataset, self.split) + f"/batches/{int(b)}", self.batch_query(e)
        )
        return self._finish(z, e, int(b))

    def _finish(self, z: Dict[str, np.ndarray], epoch: int, b: int) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for k, v in z.items():
            if k == "id":
                out[k] = [str(s) for s in v] if self.as_torch else v
            elif self.as_torch:
                out[k] = torch.from_numpy(np.ascontiguousarray(v))
            else:
                out[k] = v
        out["epoch"] = epoch
        out["batch"] = b
        return out

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        epoch = self.epoch
        start = self._start
        steps = len(self)
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for b in range(start + worker, steps, workers):
            batch = self.fetch(b, epoch)
            if info is None:
                # The caller holds batch b from here on: the state after it.
                self._pos = (epoch, b + 1)
            yield batch

    # Epochs and state ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration epoch ``epoch`` (from its start, or from the position
        ``load_state_dict`` set for that epoch)."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch
        self._pos = (epoch, self._start)

    def state_dict(self, after: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The plan's integers and the position to resume from: ``epoch`` and ``batch`` (the
        next batch index), ``batch_size``, ``seed``, ``world_size``, ``rank``.

        ``after``: a batch this loader yielded (through a DataLoader with workers too): the
        state after it. Without it, the state after the last batch this process's own
        iteration handed out (exact without DataLoader workers; with workers use ``after``).
        Past an epoch's last batch the position is the next epoch's batch 0.
        """
        if after is not None:
            epoch, nxt = int(after["epoch"]), int(after["batch"]) + 1
        else:
            epoch, nxt = self._pos
        if nxt >= len(self):
            epoch, nxt = epoch + 1, 0
        return {
            "epoch": epoch,
            "batch": nxt,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resumes at ``state``'s position: the next iteration of epoch ``state["epoch"]``
        starts at its batch ``state["batch"]``, converted to this loader's steps when its
        ``batch_size * world_size`` differs (it must divide the saved position)."""
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"not a BatchLoader state: missing {missing}")
        seed = None if state["seed"] is None else int(state["seed"])
        if seed != self.seed:
            raise ValueError(f"the state is of seed {seed}, this loader's is {self.seed}: "
                             "another order")
        position = int(state["batch"]) * int(state["batch_size"]) * int(state["world_size"])
        step = self.batch_size * self.world_size
        if position % step:
            raise ValueError(
                f"the state's position (sample {position} of epoch {state['epoch']}) is not a "
                f"whole number of this loader's steps (batch_size*world_size = {step})")
        self.epoch = int(state["epoch"])
        self._start = position // step
        self._pos = (self.epoch, self._start)


def fetch_items(url: str, dataset: str, split: str, ids: Sequence[str], *,
                api_key: Optional[str] = None, client: Optional[Client] = None,
                **params: Any) -> Dict[str, np.ndarray]:
    """``POST .../batch`` with ``{"ids": ids}``: the named items as one batch, the same arrays
    as a ``BatchLoader`` batch (numpy), ``params`` as there (``seed``, ``epoch``, image or
    volume parameters)."""
    client = client or Client(url, api_key=api_key)
    return client.get_npz(split_path(dataset, split) + "/batch", params, method="POST",
                          json_body={"ids": list(ids)})


def state_after(loader: BatchLoader, batch: Mapping[str, Any]) -> Dict[str, Any]:
    """``loader.state_dict(after=batch)``."""
    return loader.state_dict(after=batch)


__all__ = ["BatchLoader", "fetch_items", "state_after"]
