"""Processes, GPUs and nodes for the evaluation stages, on Lightning's launcher (no cluster code of our own).

``zc`` rides ``Trainer.predict``; ``search`` and ``generate``, whose loops are not a dataset, ride
:class:`lightning.fabric.Fabric`: :func:`launch` starts ``fn(ranks)`` on every process — spawned here (``ddp_spawn``:
safe inside the pipeline, a notebook or a test) or started by SLURM/torchrun (``ddp``) — and returns rank 0's result.
:class:`Ranks` is the little a loop needs: its rank, the world size, a barrier, and gathering Python objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Strategy = Literal["auto", "ddp", "ddp_spawn"]


def launched_externally() -> bool:
    """Whether SLURM (``srun``) or torchrun started this job's processes."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def resolve_strategy(strategy: Strategy, processes: int) -> str:
    """``auto``: one process → no strategy; more → ``ddp`` when SLURM/torchrun started them, else ``ddp_spawn``."""
    if strategy != "auto" or processes <= 1:
        return strategy
    return "ddp" if launched_externally() else "ddp_spawn"


def launch_settings(workers: int = 1, devices: int = 0, num_nodes: int = 1, strategy: Strategy = "auto") -> dict:
    """The ``Trainer``/``Fabric`` arguments of a stage's ``workers`` (CPU processes) or ``devices`` (GPUs, one process
    each) per node on ``num_nodes`` nodes."""
    processes = devices or workers
    return {"accelerator": "gpu" if devices else "cpu", "devices": processes, "num_nodes": num_nodes,
            "strategy": resolve_strategy(strategy, processes * num_nodes)}


PORT_ENV = "STANDALONE_PORT"
"""Lightning's own override of the port it would pick for a job it spawns on this machine
(``lightning.fabric.plugins.environments.lightning.find_free_network_port``)."""
PORT_OWNER_ENV = "LIGHTNING_NAS_PORT_OWNER"
"""The pid that :func:`reserve_local_port` drew :data:`PORT_ENV` for: a child process that inherits it draws its own."""


def reserve_local_port() -> int | None:
    """Give this process its own port for the jobs it spawns (``ddp_spawn``), unless the user or a launcher chose one
    (``MASTER_PORT``, as torchrun sets it, or :data:`PORT_ENV`; SLURM jobs derive theirs from the job id): a port
    drawn at random below the kernel's ephemeral range and free now; a process started by one that drew a port
    draws its own. Left to Lightning, two processes that spawn at the same moment (two ``zc`` stages, two pipelines)
    can both get the port the kernel hands out next: one fails with EADDRINUSE and the other's ranks wait forever
    for the peers that joined the wrong job. The port is reused by this process's later launches (one at a time;
    the store's socket is rebindable). Returns this process's port, or ``None`` (the user's choice, or none free)."""
    import random
    import socket

    if "LOCAL_RANK" in os.environ:
        return None  # a rank that torchrun or Lightning's `ddp` launcher started: its MASTER_PORT is the job's
    owner = os.environ.get(PORT_OWNER_ENV)
    if owner not in (None, str(os.getpid())) and os.environ.get("MASTER_PORT") == os.environ.get(PORT_ENV):
        del os.environ["MASTER_PORT"]  # not a launcher's: Lightning left it in our parent's environment after a spawn
    if "MASTER_PORT" in os.environ or (PORT_ENV in os.environ and owner is None):
        return None  # the user's (or a launcher's) choice
    if owner == str(os.getpid()):
        return int(os.environ[PORT_ENV])
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    draw = random.SystemRandom()  # not the seeded generators: a run's results never depend on its port
    low, high = 10_000, max(10_001, ephemeral - 1)
    for _ in range(100):
        port = draw.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", port))  # where the job's store will listen
            except OSError:
                continue
        os.environ[PORT_ENV], os.environ[PORT_OWNER_ENV] = str(port), str(os.getpid())
        return port
    for name in (PORT_ENV, PORT_OWNER_ENV):  # an inherited draw: not ours to share
        os.environ.pop(name, None)
    return None  # nothing free in the range: Lightning picks as before


def threads_per_process(threads: int, processes: int) -> int:
    """``threads``, or 0 (cores / processes) → this machine's cores shared out."""
    return threads or max(1, (os.cpu_count() or 1) // processes)


@dataclass
class Ranks:
    """This process's place in the job and the collectives an evaluation loop needs."""

    rank: int = 0
    world_size: int = 1
    fabric: Any = None

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (every rank gets the list)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            self.fabric.barrier()

    def share(self, items: Sequence[Any]) -> list[Any]:
        """This rank's items: every ``world_size``-th from ``rank`` on (the distributed sampler's dealing)."""
        return list(items[self.rank :: self.world_size])

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]`` computed across the ranks (each its :meth:`share`); every rank gets the list."""
        mine = [fn(x) for x in self.share(items)]
        if self.world_size == 1:
            return mine
        shares = self.gather(mine)
        out = [None] * len(items)
        for rank, results in enumerate(shares):
            out[rank :: self.world_size] = results
        return out


def launch(fn: Callable[..., Any], *args, workers: int = 1, devices: int = 0, num_nodes: int = 1,
           strategy: Strategy = "auto", threads: int = 0) -> Any:
    """Run ``fn(ranks, *args)`` on the processes of :func:`launch_settings` (``threads`` torch threads each, 0:
    cores / processes) and return rank 0's result (``None`` on the other ranks of an externally started job). One
    process: ``fn`` runs here, with no Lightning at all, under ``threads`` torch threads when given (restored after:
    float sums such as T-CET's change with the thread count, so a run reproduces another only at the same count)."""
    settings = launch_settings(workers, devices, num_nodes, strategy)
    if settings["devices"] * num_nodes <= 1:
        if not threads:
            return fn(Ranks(), *args)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn(Ranks(), *args)
        finally:
            torch.set_num_threads(before)
    from lightning.fabric import Fabric

    return Fabric(**settings).launch(_run_rank, fn, threads_per_process(threads, settings["devices"]), *args)


def _run_rank(fabric, fn, threads: int, *args):
    import torch

    if threads:
        torch.set_num_threads(threads)
    result = fn(Ranks(fabric.global_rank, fabric.world_size, fabric), *args)
    # leave together and close the process group: a rank exiting with gloo's threads still up aborts
    # ("terminate called without an active exception")
    fabric.barrier()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return result if fabric.global_rank == 0 else None
