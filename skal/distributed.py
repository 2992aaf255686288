"""One query sharded over the processes of a ``torch.distributed`` process group.

When the default process group is initialised with more than one process (as
``torchrun`` and ``accelerate launch`` set it up), every selector's
``select`` scores only this process's share of the pool and the processes
merge their results so that **every process returns the same indices and
scores as a single-process query with the same seed**. Each process must hold
the same fitted learner (the same weights) and the same pool, and call
``query`` with the same arguments; the query's seed comes from the learner's
``random_state``, which must therefore be set (and equal) on every process.

How the pool is split
    The pool rows are split into contiguous blocks of whole pool batches
    (``iterator_valid__batch_size``, else ``batch_size``) and the blocks
    shared out as :class:`~torch.utils.data.DistributedSampler` shares out
    samples, the first ``n_batches % world_size`` processes taking one more,
    without the sampler's padding duplicates. Every batch a process scores is
    the very batch a single process scores, so the per-row outputs are the
    same bits (a batch's rows can round differently in another batch).

What each merge does (``N`` pool rows, ``W`` processes, ``n`` to choose)
    * top-k of a score: every process ranks its rows by (score, position in
      the seeded tie-breaking permutation), the single process's order, and
      sends its best ``n``; the merge of those ``W n`` is the global top ``n``;
    * StochasticBatch and ClusterBatch: the scores are gathered (``4 N``
      bytes) and the rule runs on every process with the same seed (softrank
      weights need every row's global rank anyway); ClusterBatch's candidate
      embeddings are computed sharded and gathered;
    * CoreSet's k-center greedy: each process keeps its rows' distance to the
      nearest centre; a round trip is one all-gather of each process's 32
      farthest rows (distance, tie-breaking key, row, embedding) and the
      largest distance among its others; every process then plays the greedy
      steps on the gathered rows for as long as the next pick is farther than
      any row not sent (usually all 32 or more per round trip);
    * BADGE's k-means++ seeding: each process keeps its rows' ``D^2``; a draw
      is a race of exponential clocks (``clock / D^2``, clocks from the shared
      seed, the whole pool's drawn on every process); a round trip gathers
      each process's winner of the next pick and, for the 7 picks after it,
      its rows of smallest ``clock / D^2`` now (a bound: ``D^2`` only falls),
      and every process plays those picks while they are certain;
    * DISAL's drift removal: the per-class sums of logit changes are chained
      through the processes in row order before the divergence, the counts
      all-reduced;
    * Random draws the whole pool's priorities on every process (from the
      seed) and keeps its rows'; BALD seeds its dropout masks per pool batch;
      ISAL, TiDAL and LL4AL need nothing beyond the aligned batches.

Errors
    An exception on one process while it scores its rows (or checks them)
    is shared: every process raises (the failing one its own exception, the
    others the same type and message, naming the failing rank), so no process
    is left waiting in a collective. A process that never reaches the query
    leaves the others waiting until the process group's ``timeout``
    (``init_process_group(timeout=...)``), where torch raises.

:func:`local_query` turns sharding off for queries that each process runs on
its own pool on purpose.
"""

import contextlib
import pickle
import re
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = ["is_sharded", "local_query"]

_LOCAL = ContextVar("skal_local_query", default=False)
_CURRENT = ContextVar("skal_shard", default=None)


def _dist():
    import torch.distributed as dist

    return dist


def is_sharded():
    """Whether a query made here now is sharded over a process group.

    True when ``torch.distributed`` is available, its default process group
    is initialised with a world size above 1, and no :func:`local_query`
    block is active.

    Returns
    -------
    bool

    Examples
    --------
    >>> from skal.distributed import is_sharded, local_query
    >>> is_sharded()  # no process group here
    False
    >>> with local_query():
    ...     is_sharded()
    False
    """
    if _LOCAL.get():
        return False
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


@contextlib.contextmanager
def local_query():
    """Inside the block, queries run on this process alone, process group or not.

    For scripts that query a different pool on each process on purpose (one
    campaign per process, say): without it, a query under an initialised
    process group of several processes is sharded and expects the same pool
    and learner on every process.

    Examples
    --------
    >>> import numpy as np
    >>> from skal.distributed import local_query
    >>> from skal.selectors import Random
    >>> with local_query():
    ...     idx, _ = Random().select(None, np.zeros((10, 2)), 3, random_state=0)
    >>> len(set(idx.tolist()))
    3
    """
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


@dataclass(frozen=True)
class Shard:
    """This process's share of a pool of ``n_total`` rows: rows ``start .. stop - 1``."""

    rank: int
    world: int
    n_total: int
    unit: int
    bounds: tuple  # (world + 1) row boundaries, bounds[r] .. bounds[r + 1] on rank r
    device: torch.device  # where collectives take their tensors

    @property
    def start(self):
        return self.bounds[self.rank]

    @property
    def stop(self):
        return self.bounds[self.rank + 1]

    @property
    def n_local(self):
        return self.stop - self.start

    @property
    def first_batch(self):
        """Index of this process's first pool batch in the whole pool's batches."""
        return self.start // self.unit

    def owner(self, row):
        """The rank whose block holds global row ``row``."""
        return int(np.searchsorted(np.asarray(self.bounds), row, side="right") - 1)

    # -- collectives -------------------------------------------------------

    def all_gather(self, tensor):
        """``(world, *tensor.shape)``: every rank's ``tensor`` (same shape and dtype on all)."""
        dist = _dist()
        moved = tensor.to(self.device).contiguous()
        out = [torch.empty_like(moved) for _ in range(self.world)]
        dist.all_gather(out, moved)
        return torch.stack(out).to(tensor.device)

    def broadcast(self, tensor, src):
        """``tensor`` of rank ``src`` on every rank (each passes one of the same shape and dtype)."""
        dist = _dist()
        moved = tensor.to(self.device).clone()  # never into the caller's tensor (it may be a view)
        dist.broadcast(moved, src=src)
        return moved.to(tensor.device)

    def all_reduce(self, tensor, op="sum"):
        dist = _dist()
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        moved = tensor.to(self.device).clone()
        dist.all_reduce(moved, op=ops[op])
        return moved.to(tensor.device)

    def gather_objects(self, obj):
        dist = _dist()
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, local):
        """The whole pool's rows in row order from each rank's ``local`` rows (padded all-gather)."""
        shapes = self.gather_objects((tuple(local.shape[1:]), local.dtype, len(local)))
        trailing = {s for s, _, n in shapes if n}
        dtypes = {d for _, d, n in shapes if n}
        if len(trailing) > 1 or len(dtypes) > 1:
            raise RuntimeError(f"the processes' outputs disagree in shape or dtype: {shapes}")
        trailing = trailing.pop() if trailing else tuple(local.shape[1:])
        dtype = dtypes.pop() if dtypes else local.dtype
        width = max(self.bounds[r + 1] - self.bounds[r] for r in range(self.world))
        padded = torch.zeros((width, *trailing), dtype=dtype, device=local.device)
        padded[:len(local)] = local.reshape((len(local), *trailing))
        gathered = self.all_gather(padded)
        return torch.cat([gathered[r, :self.bounds[r + 1] - self.bounds[r]]
                          for r in range(self.world)])

    def chain(self, fn, carry):
        """Run ``carry = fn(carry)`` on rank 0, then 1, ... in turn; the last carry on every rank.

        Each rank starts from the carry the previous one produced, so a running
        sum continues through the processes in row order exactly as one process
        runs it. ``fn`` must return a tensor of ``carry``'s shape and dtype.
        """
        for r in range(self.world):
            if r == self.rank:
                carry = fn(carry)
            carry = self.broadcast(carry, src=r)
        return carry

    def agree(self, error):
        """Share ``error`` (an exception or None) of every rank; raise on all if any failed."""
        try:
            payload = None if error is None else pickle.dumps(error)
            pickle.loads(payload) if payload is not None else None
        except Exception:  # an exception that does not travel: its type name and message
            payload = pickle.dumps(RuntimeError(f"{type(error).__name__}: {error}"))
        statuses = self.gather_objects(payload)
        failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
        if not failed:
            return
        if error is not None:
            raise error
        rank, payload = failed[0]
        other = pickle.loads(payload)
        try:
            copy = type(other)(f"rank {rank} of the sharded query failed: {other}")
        except Exception:
            copy = RuntimeError(f"rank {rank} of the sharded query failed: "
                                f"{type(other).__name__}: {other}")
        raise copy from other

    @contextlib.contextmanager
    def guard(self):
        """Run the block on this rank, then agree: if any rank raised, every rank raises."""
        error = None
        try:
            yield
        except Exception as exc:  # shared with the other ranks below
            error = exc
        self.agree(error)


def _unit(net):
    """Rows per pool batch of ``net`` (the sharding grain), 1 when it has none."""
    if net is None or not hasattr(net, "get_params_for"):
        return 1
    size = net.get_params_for("iterator_valid").get("batch_size", getattr(net, "batch_size", 1))
    return int(size) if isinstance(size, (int, np.integer)) and size > 0 else 1


def _comm_device():
    dist = _dist()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def split(n_total, unit, world):
    """Row boundaries of ``world`` contiguous blocks of whole batches of ``unit`` rows.

    Like ``DistributedSampler`` without shuffling or padding: the
    ``ceil(n_total / unit)`` batches are dealt out so that the first
    ``n_batches % world`` ranks get one more; a rank may get none.

    Examples
    --------
    >>> from skal.distributed import split
    >>> split(10, 4, 2)  # batches of 4, 4, 2 rows: two to rank 0, one to rank 1
    (0, 8, 10)
    >>> split(3, 1, 4)
    (0, 1, 2, 3, 3)
    """
    n_batches = -(-n_total // unit)
    base, extra = divmod(n_batches, world)
    bounds, batch = [0], 0
    for r in range(world):
        batch += base + (r < extra)
        bounds.append(min(batch * unit, n_total))
    return tuple(bounds)


def plan(net, n_total):
    """The :class:`Shard` of this process for a pool of ``n_total`` rows."""
    dist = _dist()
    world, rank = dist.get_world_size(), dist.get_rank()
    unit = _unit(net)
    return Shard(rank, world, n_total, unit, split(n_total, unit, world), _comm_device())


def current():
    """The :class:`Shard` of the query running now on this thread, or None."""
    return _CURRENT.get()


def batch_offset():
    """Index, in the whole pool, of the first pool batch this process scores (0 unsharded)."""
    shard = _CURRENT.get()
    return 0 if shard is None else shard.first_batch


@contextlib.contextmanager
def active(shard):
    """Make ``shard`` the current one for the score functions called inside."""
    token = _CURRENT.set(shard)
    try:
        yield shard
    finally:
        _CURRENT.reset(token)


def rows(X, start, stop):
    """Rows ``start .. stop - 1`` of a pool (array, tensor, dict, lazy rows or Dataset), no copy."""
    if isinstance(X, (np.ndarray, torch.Tensor)):
        return X[start:stop]
    if hasattr(X, "take") and hasattr(X, "chunk"):  # skal._bookkeeping.Rows
        return X.take(np.arange(start, stop))
    if isinstance(X, dict):
        return {key: rows(value, start, stop) for key, value in X.items()}
    if isinstance(X, Dataset):
        return Subset(X, range(start, stop))
    return X[start:stop]


def begin(selector, net, X_pool, n, random_state):
    """Check that every rank runs the same query; return its shared seed.

    Raises ValueError on every rank when the ranks disagree on the selector,
    ``n``, the pool's length or the seed. A None seed on every rank becomes
    rank 0's fresh one, so that the ranks draw alike.
    """
    dist = _dist()
    fresh = int(np.random.SeedSequence().generate_state(1)[0])
    # the parameters as text, without the addresses of callables (they differ between processes)
    params = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(selector))
    mine = (type(selector).__name__, params, int(n), len(X_pool), random_state, _unit(net))
    world = dist.get_world_size()
    everyone = [None] * world
    dist.all_gather_object(everyone, (mine, fresh))
    queries = [q for q, _ in everyone]
    if any(q != queries[0] for q in queries):
        fields = ("selector", "parameters", "n", "pool length", "random_state", "pool batch size")
        differ = [name for i, name in enumerate(fields) if len({q[i] for q in queries}) > 1]
        raise ValueError(
            f"The {world} processes of the sharded query disagree on its {', '.join(differ)}: "
            f"{[dict(zip(fields, q)) for q in queries]}. Give every process the same learner "
            "(the same random_state), pool and n, or query each on its own inside "
            "skal.distributed.local_query()."
        )
    return everyone[0][1] if random_state is None else random_state


def tie_keys(generator, n_total, device, shard):
    """Each local row's position in the tie-breaking permutation :func:`skal.scores.top_n` draws.

    Draws the same ``randperm(n_total)`` from ``generator`` as the single
    process does, so the generator ends in the same state.
    """
    perm = torch.randperm(n_total, generator=generator, device=device)
    keys = torch.empty_like(perm)
    keys[perm] = torch.arange(n_total, device=device)
    return keys[shard.start:shard.stop]


def top_n(scores, n, keys, shard):
    """The global top ``n`` of the ranks' ``scores``; ``(rows, scores)`` on every rank.

    Orders rows by score (highest first), ties by ``keys`` (their position in
    the single process's tie-breaking permutation), as
    :func:`skal.scores.top_n` does: each rank sends its best ``n``, and the
    merge of the ``world * n`` candidates is sorted the same way.
    """
    dtype = scores.dtype
    m = min(n, len(scores))
    by_key = torch.argsort(keys)
    best = by_key[torch.sort(scores[by_key], descending=True, stable=True).indices[:m]]
    mine = torch.zeros((n, 4), dtype=torch.float64, device=scores.device)  # valid, score, key, row
    mine[:m, 0] = 1
    mine[:m, 1] = scores[best].double()
    mine[:m, 2] = keys[best].double()
    mine[:m, 3] = (best + shard.start).double()
    merged = shard.all_gather(mine).reshape(-1, 4)
    merged = merged[merged[:, 0] == 1]
    merged = merged[torch.argsort(merged[:, 2])]
    merged = merged[torch.sort(merged[:, 1], descending=True, stable=True).indices[:n]]
    return merged[:, 3].long(), merged[:, 1].to(dtype)


def map_rows(net, fn, X, unit=None):
    """``net.map_pool(fn, X)`` sharded: each rank maps its block of batches, all get all rows."""
    shard = plan(net, len(X)) if unit is None else Shard(
        _dist().get_rank(), _dist().get_world_size(), len(X), unit,
        split(len(X), unit, _dist().get_world_size()), _comm_device())
    local = None
    with shard.guard():
        local = net.map_pool(fn, rows(X, shard.start, shard.stop))
    return shard.gather_rows(local)


def guarded():
    """The current shard's :meth:`Shard.guard`, or a block that does nothing when not sharded."""
    shard = _CURRENT.get()
    return contextlib.nullcontext() if shard is None else shard.guard()


def with_trailing_shape(tensor):
    """``tensor``, or on a process without rows its empty form with the others' trailing shape.

    ``map_pool`` over no rows returns a 1-D empty tensor; what follows needs
    the shape the other processes' outputs have. Not sharded: ``tensor``.
    """
    shard = _CURRENT.get()
    if shard is None:
        return tensor
    shapes = {s for s in shard.gather_objects(tuple(tensor.shape[1:]) if len(tensor) else None)
              if s is not None}
    if len(tensor) or not shapes:
        return tensor
    return tensor.reshape((0, *shapes.pop()))
