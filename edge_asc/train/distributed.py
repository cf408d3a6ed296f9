"""Training on many processes with torch.distributed: one process per GPU (or per CPU worker), started by torchrun.

``torchrun --nproc-per-node N -m edge_asc train ...`` (one machine, or many through torchrun's rendezvous) starts N
workers; each reads its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
:func:`init_from_env` joins the process group: NCCL on CUDA, gloo on the CPU. ``edge-asc train --nproc N`` calls
torchrun itself (:func:`launch`, through ``torch.distributed.run``) for one machine.

What the loop gets is a :class:`DistContext`; the single-process run is ``DistContext()`` (world size 1), for which
every method is the identity, so a single-process run computes exactly what it computed before DDP existed.
Under DDP:

- ``--batch-size`` stays the *global* batch: each epoch's shuffled order (the same on every rank, drawn from the
  run's seed) is cut into global batches as in a single process, and rank r trains on the r-th contiguous part of
  each (:meth:`DistContext.shard`). The local loss is scaled by ``world * local / global`` so that DDP's gradient
  average is the gradient of the global batch's mean loss, also when the last batch does not split evenly.
- BatchNorm is synchronised: ``torch.nn.SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` on the CPU (torch's
  supports only GPUs). Both keep BatchNorm2d's parameters and buffers under the same names, so a checkpoint of the
  unwrapped model is the same file a single process writes.
- Augmentation and dropout draw from per-rank streams derived from (seed, epoch, rank) (:meth:`DistContext.rank_rng`,
  :meth:`DistContext.rank_seed`): different on each rank, the same on every rerun and resume with the same world size.
- Rank 0 alone writes checkpoints, history and logs; validation is sharded over the ranks and gathered.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..errors import ConfigError

T = TypeVar("T")

#: How long ranks wait for rank 0 to build the feature cache (hours for TAU on a slow disk); every other collective
#: uses torch's default timeout, so that a rank that died mid-epoch stops the others soon.
CACHE_WAIT = _dt.timedelta(hours=24)


def torchrun_world_size() -> int | None:
    """``WORLD_SIZE`` when this process was started by torchrun (or another launcher that sets ``RANK`` and
    ``WORLD_SIZE``), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


@dataclass(kw_only=True)
class DistContext:
    """This process's place in a distributed run; ``DistContext()`` is a single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    """the process's index on its machine (its GPU with CUDA)."""
    backend: str = ""
    """``nccl``, ``gloo``, or '' for a single process."""
    _cache_group: Any = field(default=None, repr=False)
    """a gloo group with :data:`CACHE_WAIT` as its timeout."""
    _bn_group: Any = field(default=None, repr=False)
    """the gloo group :class:`CpuSyncBatchNorm` reduces over (its own, so that its collectives never interleave
    with DDP's gradient buckets on one group)."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one process that writes files and logs."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What a checkpoint's ``compute`` records about the processes (empty for a single process)."""
        return {"world_size": self.world_size, "backend": self.backend} if self.distributed else {}

    def shard(self, items: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of ``items`` (sizes differ by at most one; rank order = ``items`` order)."""
        if not self.distributed:
            return items
        return np.array_split(items, self.world_size)[self.rank]

    def rank_rng(self, entropy: Sequence[int], shared: np.random.Generator) -> np.random.Generator:
        """The augmentation generator: ``shared`` in a single process; under DDP one stream per rank, spawned from
        ``entropy`` (``SeedSequence(entropy).spawn(...)[rank]``), so ranks differ and reruns repeat."""
        if not self.distributed:
            return shared
        return np.random.default_rng(np.random.SeedSequence(list(entropy), spawn_key=(self.rank,)))

    def rank_seed(self, seed: int) -> int:
        """The torch seed (dropout) of this rank: ``seed`` in a single process, a per-rank value derived from it
        under DDP."""
        if not self.distributed:
            return seed
        return int(np.random.SeedSequence([seed], spawn_key=(self.rank,)).generate_state(1, np.uint64)[0])

    def scale_loss(self, loss, local: int, total: int):
        """The loss whose DDP-averaged gradient is that of the global batch mean: ``loss`` (a mean over ``local``
        clips) times ``world * local / total``; ``loss`` itself in a single process."""
        if not self.distributed:
            return loss
        return loss * (self.world_size * local / total)

    def sum(self, values: Sequence[float], device: str = "cpu") -> np.ndarray:
        """float64[len(values)]: the element-wise sum over ranks (the values themselves in a single process)."""
        a = np.asarray(values, dtype=np.float64)
        if not self.distributed:
            return a
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(a).to(device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the other ranks (e.g. build the feature cache once, then open it). The
        others wait up to :data:`CACHE_WAIT`. On a cache folder that is not shared between machines, every rank of
        another machine builds its own copy (cache entries are written atomically)."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        result = fn() if self.is_main else None
        dist.barrier(group=self._cache_group)
        return result if self.is_main else fn()

    def wrap(self, model, device: str):
        """``model`` with BatchNorm synchronised across ranks, wrapped in DistributedDataParallel (``model`` itself
        in a single process). ``model`` is changed in place (its BatchNorm2d children replaced by synchronised ones
        holding the same parameters and buffers), so the caller keeps it for checkpoints and validation."""
        if not self.distributed:
            return model
        import torch
        from torch.nn.parallel import DistributedDataParallel

        if device == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.local_rank], output_device=self.local_rank)
        _convert_cpu_sync_batchnorm(model, self._bn_group)
        return DistributedDataParallel(model)

    def shutdown(self) -> None:
        """Leave the process group (a no-op in a single process)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init_from_env(device: str) -> DistContext:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); ``DistContext()`` when there is none or its world size is 1.

    Args:
        device: the resolved training device: ``cuda`` (backend NCCL, one GPU per local rank) or ``cpu`` (gloo).

    Raises:
        ConfigError: a device DDP does not run on here (mps), or more local ranks than GPUs.
    """
    world = torchrun_world_size()
    if world is None or world == 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    import torch
    import torch.distributed as dist

    if device == "cuda":
        n_gpus = torch.cuda.device_count()
        if local_rank >= n_gpus:
            raise ConfigError(f"local rank {local_rank} has no GPU: this machine has {n_gpus}; start at most "
                              f"{n_gpus} processes per machine (--nproc / torchrun --nproc-per-node)")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"distributed training runs on cuda (NCCL) or cpu (gloo), not {device!r}: "
                          "use --device cuda or cpu, or a single process")
    dist.init_process_group(backend=backend)
    cache_group = dist.new_group(backend="gloo", timeout=CACHE_WAIT)
    bn_group = dist.new_group(backend="gloo") if backend == "gloo" else None
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend,
                       _cache_group=cache_group, _bn_group=bn_group)


def launch(nproc: int, worker_argv: Sequence[str]) -> int:
    """Run ``python -m edge_asc <worker_argv>`` as ``nproc`` processes on this machine through torchrun
    (``torch.distributed.run --standalone``: a local rendezvous on a free port). Returns the exit code: 0, or
    the first failed worker's (which printed its own error)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(nproc), "-m", "edge_asc", *worker_argv])
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values() if f.exitcode]
        return next((c for c in codes if c > 0), 1)
    return 0


def _cpu_sync_batchnorm_class():
    import torch
    import torch.distributed as dist
    from torch import nn

    class _AllReduceSum(torch.autograd.Function):
        """Differentiable all-reduce (sum): each rank's gradient is the sum over ranks of the output's gradients."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            y = x.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(y, group=group)
            return y

        @staticmethod
        def backward(ctx, g):
            g = g.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(g, group=ctx.group)
            return g, None

    class CpuSyncBatchNorm(nn.BatchNorm2d):
        """BatchNorm2d whose training statistics are those of the global batch over all ranks (gloo, CPU tensors).

        Mean first, then the centred sum of squares (two reductions, so the variance has no E[x²] - E[x]²
        cancellation); both are differentiable, so the gradient is that of one BatchNorm over the global batch, as
        in ``torch.nn.SyncBatchNorm``. Running statistics update as BatchNorm2d's (unbiased variance). In eval mode,
        or outside a process group, it is BatchNorm2d.
        """

        process_group = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not (self.training and dist.is_available() and dist.is_initialized()):
                return super().forward(x)
            dims = (0, 2, 3)
            count = x.new_tensor([x.numel() // x.shape[1]], dtype=torch.float64)
            s = _AllReduceSum.apply(torch.cat([x.sum(dim=dims, dtype=torch.float64), count]), self.process_group)
            n = s[-1]
            mean = s[:-1] / n
            xc = x - mean.to(x.dtype).view(1, -1, 1, 1)
            var = _AllReduceSum.apply((xc * xc).sum(dim=dims, dtype=torch.float64), self.process_group) / n
            y = xc * torch.rsqrt(var + self.eps).to(x.dtype).view(1, -1, 1, 1)
            if self.affine:
                y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    m = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                    unbiased = var * (n / torch.clamp(n - 1, min=1))
                    self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                    self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
            return y

    return CpuSyncBatchNorm


_CPU_SYNC_BN: Any = None


def cpu_sync_batchnorm_class():
    """The :class:`CpuSyncBatchNorm` class (defined on first use: torch is imported lazily)."""
    global _CPU_SYNC_BN
    if _CPU_SYNC_BN is None:
        _CPU_SYNC_BN = _cpu_sync_batchnorm_class()
    return _CPU_SYNC_BN


def _convert_cpu_sync_batchnorm(module, group) -> None:
    """Replace every BatchNorm2d below ``module`` (in place) by a :class:`CpuSyncBatchNorm` sharing its parameters
    and buffers."""
    from torch import nn

    cls = cpu_sync_batchnorm_class()
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, cls):
            sync = cls(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                       track_running_stats=child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            if child.track_running_stats:
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
            sync.process_group = group
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            _convert_cpu_sync_batchnorm(child, group)
