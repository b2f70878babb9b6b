"""Where and how a run executes: the device and its speed switches (their
per-device defaults), seeds and RNG state, and torch.distributed (set-up, the
reductions the training loop needs, teardown).

Distributed runs are launched by ``torchrun``; each process is one rank. The
reductions are named helpers (``Dist.sum``, ``Dist.any``) so that the
training loop reads as a one-process loop.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError

DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The device ``name`` names ('auto': CUDA where there is one, else the CPU);
    ``UserError`` naming ``key`` for a name that is not a device or a GPU that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"{key} {name!r} is not a device; use {DEVICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{key} {name!r}: vitlab runs on {DEVICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{key} is {name!r} but CUDA is not available; use {key}=cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(f"{key} is {name!r} but this machine has {count} GPU(s): cuda:0..cuda:{count - 1}")
    return dev


def device_settings(tc, device: torch.device) -> dict:
    """The config's speed switches with their per-device defaults (None/'auto') resolved."""
    cuda = device.type == "cuda"
    det = tc.deterministic if tc.deterministic is not None else not cuda
    return {"amp": tc.amp if tc.amp != "auto" else ("bf16" if cuda else "none"),
            "deterministic": det,
            "tf32": tc.tf32 if tc.tf32 is not None else (cuda and not det),
            "fused": tc.fused if tc.fused is not None else cuda,
            "channels_last": tc.channels_last if tc.channels_last is not None else cuda,
            "check_every": tc.check_every or (25 if cuda else 1)}


def require_compiler() -> None:
    """torch.compile's inductor writes C++ (and, on CUDA, Triton launchers) and needs a C compiler."""
    import shutil

    if not any(shutil.which(c) for c in (os.environ.get("CC", ""), "cc", "gcc", "clang") if c):
        raise UserError("train.compile needs a C compiler on this machine (gcc or clang; e.g. apt-get install "
                        "gcc), or set train.compile=false")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` while the block runs, the count as it was afterwards
    (nothing for None or 0: torch's own count)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)


def apply_device_settings(settings: dict, threads: int) -> None:
    """Threads, deterministic algorithms, cuDNN autotuning and TF32 as ``device_settings`` chose."""
    if threads > 0:
        torch.set_num_threads(threads)
    if settings["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = settings["tf32"]
    torch.backends.cudnn.allow_tf32 = settings["tf32"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The state of every generator a run draws from (Python, numpy, torch, CUDA)."""
    # numpy's state is stored as a tensor and plain numbers: checkpoints are read with
    # torch.load(weights_only=True), which refuses numpy arrays.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()``; the CUDA generators of the GPUs this machine has
    (a checkpoint of a machine with more GPUs restores as many as are here)."""
    torch.set_rng_state(state["torch"])
    ns = state["numpy"]
    np.random.set_state((ns["name"], ns["keys"].numpy().astype(np.uint32), ns["pos"], ns["has_gauss"],
                         ns["cached_gaussian"]))
    random.setstate(state["random"])
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # a DDP of a compiled model


@dataclass
class Dist:
    """This process's place in a distributed run (rank 0 of 1 without one)."""
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # the device its collectives run on

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flags: list[bool]) -> list[bool]:
        """Each flag true on every rank if it is true on some rank."""
        if self.world == 1:
            return list(flags)
        t = torch.tensor(flags, dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Every rank takes rank 0's buffers (batch-norm statistics)."""
        if self.world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def seed(self, base: int) -> int:
        """The seed of this rank's model randomness: ``base`` on rank 0 (a one-process
        run is unchanged), distinct on every other rank."""
        return base + self.rank * 1_000_000_009


def init_distributed(device_name: str) -> tuple[Dist, str]:
    """Join the process group of a ``torchrun`` launch (none for one process); returns
    this rank's place and the device it uses (``cuda:LOCAL_RANK`` with CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    device = torch.device("cpu")
    if use_cuda:
        count = torch.cuda.device_count()
        if local >= count:
            raise UserError(f"local rank {local} has no GPU: this machine has {count}; start at most {count} "
                            "processes per machine (torchrun --nproc-per-node), or set train.device=cpu")
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)  # before the process group, so NCCL binds this rank to its GPU
        device_name = str(device)
    if not dist.is_initialized():
        if use_cuda:
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Dist(rank, world, device), device_name


def finish_distributed(d: Dist, wait_for_all: bool = True) -> None:
    """The end of a distributed run: every rank waits for the others (``wait_for_all``),
    then the process group goes away. Callers drop their DistributedDataParallel model
    (and whatever holds it) first: its reducer must not outlive the process group, or
    its destruction can wait forever on a communication thread."""
    if d.world <= 1 or not dist.is_initialized():
        return
    gc.collect()
    if not wait_for_all:
        pass
    elif d.device is not None and d.device.type == "cuda":
        dist.barrier(device_ids=[d.device.index])
    else:
        dist.barrier()
    dist.destroy_process_group()
