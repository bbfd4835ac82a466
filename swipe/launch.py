"""One call that starts torch.distributed under whatever launched us.

    info = init_distributed()          # DistInfo(rank, world_size, local_rank, device, backend, launcher)
    ...
    shutdown()

Launchers, detected in this order (``launcher=`` or env ``SWIPE_LAUNCHER`` forces one):

* ``torchrun``: RANK and WORLD_SIZE are set (torchrun / torch.distributed.run, or a user who
  set MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE by hand); LOCAL_RANK (default 0).
* ``mpi``: an MPI launcher's variables are set (mpiexec/mpirun of MPICH/Intel MPI/Open MPI,
  PBS + PALS on Aurora/Polaris, srun --mpi=pmi*). Rank and size from mpi4py's COMM_WORLD; rank
  0 picks the rendezvous (MASTER_ADDR, else the address of the interface SWIPE_NET_INTERFACE,
  else its host name; MASTER_PORT or a free port) and
  broadcasts it; local rank from PALS_LOCAL_RANKID / MPI_LOCALRANKID /
  OMPI_COMM_WORLD_LOCAL_RANK / ..., else from an MPI shared-memory split.
* ``slurm``: inside an srun step (SLURM_STEP_ID and SLURM_PROCID set): SLURM_PROCID,
  SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), SLURM_LOCALID; master = first host of
  SLURM_STEP_NODELIST / SLURM_NODELIST (compact hostlist syntax, e.g. ``nid[001-004,007]``);
  port = MASTER_PORT, else 29500 + SLURM_JOB_ID % 10000 (identical on every task without a
  broadcast).
* ``single``: none of the above: world of 1. A one-rank group is still initialised (on an
  in-memory HashStore, no port) so collectives and DeviceMesh work unchanged.

MPI is checked before Slurm because ranks started by mpiexec inside a Slurm allocation inherit
SLURM_* variables that describe the allocation, not the MPI job.

The rendezvous variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) are exported
so that libraries reading them (DeepSpeed, torch elastic helpers) agree with us.

Backend from the device: nccl (CUDA), xccl or ccl (Intel XPU, whichever is available), gloo
(CPU). Device: ``device`` if given, else CUDA, XPU or CPU, whichever exists; accelerator index
= local rank modulo the visible devices.

Threads: `configure_threads` sets a rank's torch threads from a requested number or what the
launcher says about its cores (`threads_per_rank`: OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, PBS
NCPUS, the CPU affinity / local ranks), never oversubscribing a node's cores.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Mapping

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo", "LaunchEnv", "LaunchError", "LAUNCHERS", "init_distributed", "shutdown",
    "detect_launcher", "torchrun_env", "slurm_env", "mpi_local_rank", "parse_hostlist",
    "backend_for_device", "pick_device", "device_request", "free_port", "local_world_size",
    "interface_address", "rendezvous_address", "threads_per_rank", "set_threads", "configure_threads",
]

log = logging.getLogger(__name__)

LAUNCHERS = ("torchrun", "mpi", "slurm", "single")

# variables set by MPI launchers (any one of them means "started by MPI")
_MPI_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "PALS_RANKID",
                "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")
# local-rank variables of MPI launchers, most specific first
_MPI_LOCAL_RANK = ("PALS_LOCAL_RANKID", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                   "MV2_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK")
# (not SLURM_LOCALID: under mpiexec inside an allocation it is inherited and stale; the
# shared-memory split below gives the right local rank instead)


class LaunchError(RuntimeError):
    """The environment does not describe a consistent distributed launch."""


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    launcher: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class LaunchEnv:
    """What the environment says before any rendezvous (None = decided later, e.g. by MPI)."""

    launcher: str
    rank: int | None = None
    world_size: int | None = None
    local_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None


# ---- pure parsing ---------------------------------------------------------------------------
def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise LaunchError(f"environment variable {name} is not set") from None
    except ValueError:
        raise LaunchError(f"environment variable {name}={env[name]!r} is not an integer") from None


def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LaunchError(f"hostlist {spec!r}: unbalanced ']'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise LaunchError(f"hostlist {spec!r}: unbalanced '['")
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def _expand_range(body: str, spec: str) -> list[str]:
    out = []
    for item in body.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not m:
            raise LaunchError(f"hostlist {spec!r}: bad range {item!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise LaunchError(f"hostlist {spec!r}: descending range {item!r}")
        width = len(lo)  # zero padding of the first bound is kept: nid[001-010]
        out.extend(f"{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
    return out


def _expand_item(item: str, spec: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if not m:
        return [item]
    head, tail = item[:m.start()], item[m.end():]
    return [head + v + t for v in _expand_range(m.group(1), spec) for t in _expand_item(tail, spec)]


def parse_hostlist(spec: str) -> list[str]:
    """Expand a Slurm compact host list: ``nid[001-003,007],login1`` ->
    ``['nid001', 'nid002', 'nid003', 'nid007', 'login1']``; several bracket groups in one
    name expand as a product (``r[1-2]n[1-2]`` -> r1n1 r1n2 r2n1 r2n2)."""
    hosts = [h for item in _split_top_level(spec) for h in _expand_item(item, spec)]
    if not hosts:
        raise LaunchError(f"empty host list {spec!r}")
    return hosts


def detect_launcher(env: Mapping[str, str]) -> str:
    """One of LAUNCHERS, from environment variables only (order in the module docstring)."""
    forced = env.get("SWIPE_LAUNCHER")
    if forced:
        if forced not in LAUNCHERS:
            raise LaunchError(f"SWIPE_LAUNCHER={forced!r}; expected one of {LAUNCHERS}")
        return forced
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    if any(k in env for k in _MPI_MARKERS):
        return "mpi"
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        return "slurm"
    return "single"


def torchrun_env(env: Mapping[str, str]) -> LaunchEnv:
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if not 0 <= rank < world:
        raise LaunchError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    if "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        raise LaunchError("RANK/WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not "
                          "(torchrun sets all four; set them when launching by hand)")
    port = _int(env, "MASTER_PORT")
    if not 0 < port < 65536:
        raise LaunchError(f"MASTER_PORT={port} is not a usable port (1-65535)")
    return LaunchEnv("torchrun", rank, world, int(env.get("LOCAL_RANK", 0)), env["MASTER_ADDR"], port)


def slurm_env(env: Mapping[str, str]) -> LaunchEnv:
    rank = _int(env, "SLURM_PROCID")
    world = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
    if not 0 <= rank < world:
        raise LaunchError(f"SLURM_PROCID={rank} is not in [0, {world})")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise LaunchError("Slurm launch without SLURM_STEP_NODELIST / SLURM_NODELIST: cannot find the master host")
    addr = env.get("MASTER_ADDR") or parse_hostlist(nodelist)[0]
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:
        port = 29500 + _int(env, "SLURM_JOB_ID") % 10000 if "SLURM_JOB_ID" in env else 29500
    return LaunchEnv("slurm", rank, world, int(env.get("SLURM_LOCALID", 0)), addr, port)


def mpi_local_rank(env: Mapping[str, str]) -> int | None:
    """Node-local rank from the MPI launcher's variables, or None if none is set."""
    for name in _MPI_LOCAL_RANK:
        if name in env:
            return _int(env, name)
    return None


def backend_for_device(device_type: str, available: Callable[[str], bool] | None = None) -> str:
    """nccl for cuda, xccl or ccl for xpu (whichever ``available``), gloo for cpu."""
    available = available or _backend_available
    if device_type == "cuda":
        return "nccl"
    if device_type == "xpu":
        for b in ("xccl", "ccl"):
            if available(b):
                return b
        raise LaunchError("XPU device but neither the 'xccl' backend (torch >= 2.8 built with XPU) "
                          "nor 'ccl' (pip install oneccl_bind_pt) is available")
    if device_type == "cpu":
        return "gloo"
    raise LaunchError(f"no distributed backend known for device type {device_type!r}")


def _backend_available(name: str) -> bool:
    if name == "ccl":
        try:  # registers the 'ccl' backend as a side effect
            import oneccl_bindings_for_pytorch  # noqa: F401
        except ImportError:
            return False
    try:
        return bool(dist.is_backend_available(name))
    except Exception:  # older torch: unknown names raise
        return False


def pick_device(local_rank: int, device: str | torch.device | None = None) -> torch.device:
    """The device this rank computes on; an accelerator is also made current."""
    if device is None:
        if torch.cuda.is_available():
            dtype = "cuda"
        elif hasattr(torch, "xpu") and torch.xpu.is_available():
            dtype = "xpu"
        else:
            dtype = "cpu"
        d = torch.device(dtype)
    else:
        d = torch.device(device)
    if d.type == "cpu":
        return torch.device("cpu")
    mod = getattr(torch, d.type)
    if d.index is None:
        n = mod.device_count()
        if n < 1:
            raise LaunchError(f"device type {d.type!r} requested but no such device is visible")
        d = torch.device(d.type, local_rank % n)
    mod.set_device(d)
    return d


def local_world_size(env: Mapping[str, str] | None = None) -> int:
    """Ranks on this node, from the launcher's variables (1 when none is set)."""
    env = os.environ if env is None else env
    for k in ("LOCAL_WORLD_SIZE", "PALS_LOCAL_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
              "SLURM_NTASKS_PER_NODE"):
        v = env.get(k, "").split("(")[0]  # Slurm writes e.g. "4(x2)"
        if v.isdigit():
            return int(v)
    return 1


def threads_per_rank(env: Mapping[str, str] | None = None, cores: int | None = None,
                     node_cores: int | None = None, requested: int = 0) -> tuple[int, str]:
    """Intra-op threads for this rank, and where the number came from.

    ``cores``: the CPUs this process may run on (default ``len(os.sched_getaffinity(0))``);
    ``node_cores``: the node's CPUs (default ``os.cpu_count()``); local ranks from
    `local_world_size`. The first that applies:

    1. ``requested`` > 0 (a config key): taken as is;
    2. ``OMP_NUM_THREADS``, per process as OpenMP means it (torchrun sets 1 when it starts
       several ranks), unless PBS set it: under PBS (``PBS_JOBID``) a value equal to ``NCPUS``
       is the whole chunk's and is handled as 4;
    3. ``SLURM_CPUS_PER_TASK`` (cores of one task);
    4. ``NCPUS`` under PBS (cores of the node's chunk) / local ranks;
    5. ``cores`` / local ranks.

    Cases 2-5 are then capped at ``cores`` and, when the process is not bound to a subset of
    the node (``cores == node_cores``: its local ranks share every core), at
    ``node_cores // local ranks``, so ranks never oversubscribe the node; at least 1.
    """
    env = os.environ if env is None else env
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    node_cores = node_cores or os.cpu_count() or cores
    local = max(1, local_world_size(env))
    if requested > 0:
        return int(requested), "config"
    pbs = "PBS_JOBID" in env
    omp, slurm, ncpus = (env.get(k, "").strip() for k in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "NCPUS"))
    omp = omp.split(",")[0]  # OpenMP allows a list per nesting level; the first is ours
    if omp.isdigit() and int(omp) > 0 and not (pbs and omp == ncpus):
        n, source = int(omp), f"OMP_NUM_THREADS={omp}"
    elif slurm.isdigit() and int(slurm) > 0:
        n, source = int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"
    elif pbs and ncpus.isdigit() and int(ncpus) > 0:
        n, source = max(1, int(ncpus) // local), f"PBS NCPUS={ncpus} / {local} local ranks"
    else:
        n, source = max(1, cores // local), f"{cores} cores / {local} local ranks"
    cap = cores if cores < node_cores else max(1, node_cores // local)
    if n > cap:
        why = "cores this process may use" if cores < node_cores else f"node cores / {local} local ranks"
        n, source = cap, f"{source}, capped at {cap} ({why})"
    return max(1, n), source


# GNU OpenMP (torch's CPU pool in the Linux wheels) does not survive fork: once a process has
# run a parallel region on several threads (even if it went back to one), a process forked
# from it waits forever in its own first region on more than one thread. We keep the most
# threads this process (or the one it was forked from) was seen to have.
_threads_seen = 0
_forked = False


def _note_threads() -> None:
    global _threads_seen
    _threads_seen = max(_threads_seen, torch.get_num_threads())


def _note_fork_in_child() -> None:
    global _forked
    _forked = True


_note_threads()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_note_threads, after_in_child=_note_fork_in_child)


def fork_safe_threads(n: int) -> tuple[int, str | None]:
    """``n``, or 1 in a process forked from one with several torch threads (GNU OpenMP
    would hang there on its first multi-threaded region), with the reason; no reason: ``n``."""
    if n > 1 and _forked and _threads_seen > 1:
        return 1, (f"forked from a process that had {_threads_seen} torch threads: OpenMP cannot "
                   f"start a thread pool after fork, so 1 instead of {n}; start ranks with spawn, "
                   f"a launcher or a fresh process for more")
    return n, None


def set_threads(n: int, interop: int = 1) -> int:
    """torch's intra-op threads = n (1 in a process forked after multi-threaded work, see
    `fork_safe_threads`); inter-op threads = ``interop`` (torch allows setting those once,
    before any inter-op work: a later call leaves them as they are). Returns the threads set."""
    n, why = fork_safe_threads(int(n))
    if why:
        log.warning("threads: %s", why)
    torch.set_num_threads(n)
    _note_threads()
    try:
        torch.set_num_interop_threads(int(interop))
    except RuntimeError:  # already set, or inter-op work has started
        pass
    return n


def configure_threads(requested: int = 0, env: Mapping[str, str] | None = None) -> int:
    """Set this rank's torch threads: `threads_per_rank` intra-op threads and one inter-op
    thread (nothing here runs inter-op work); logs the choice and returns the thread count."""
    n, source = threads_per_rank(env, requested=requested)
    if (m := set_threads(n, interop=1)) != n:
        n, source = m, f"{source}; 1 after fork"
    log.info("threads: %d per rank (%s)", n, source)
    return n


def device_request(device: str | None, distributed: bool) -> str | None:
    """A user's device choice as `pick_device` / `init_distributed` take it, the same rule in
    one process and on a mesh: ``auto`` (or None) -> None (an accelerator when one is visible,
    else the CPU); a type (``cpu``, ``cuda``, ``xpu``) -> that type, each rank taking its
    node-local device; an indexed device (``cuda:1``) only in one process."""
    if device in (None, "", "auto"):
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise LaunchError(f"unknown device {device!r}: expected auto, cpu, cuda, xpu or e.g. cuda:1") from e
    if distributed and d.index is not None:
        raise LaunchError(f"device {device!r}: on a mesh give a device type (cpu, cuda, xpu); each rank "
                          f"takes its node-local device")
    return str(d)


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


# ---- the one call ---------------------------------------------------------------------------
def interface_address(name: str) -> str:
    """IPv4 address of the network interface ``name`` (e.g. ``hsn0``, ``ib0``; Linux)."""
    import fcntl
    import struct

    known = [n for _, n in socket.if_nameindex()]
    if name not in known:
        raise LaunchError(f"network interface {name!r} not found on {socket.gethostname()}; it has {known}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:  # SIOCGIFADDR
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
        except OSError as e:
            raise LaunchError(f"network interface {name!r} has no IPv4 address: {e}") from e
    return socket.inet_ntoa(packed[20:24])


def rendezvous_address(env: Mapping[str, str]) -> str:
    """Where rank 0 listens for an MPI launch: ``MASTER_ADDR`` when set, else the address of
    the interface named by ``SWIPE_NET_INTERFACE`` (the high-speed network of a cluster), else
    the host name."""
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    if env.get("SWIPE_NET_INTERFACE"):
        return interface_address(env["SWIPE_NET_INTERFACE"])
    return socket.gethostname()


def _mpi_env(env: Mapping[str, str]) -> LaunchEnv:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    local = mpi_local_rank(env)
    if local is None:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        local = node.Get_rank()
        node.Free()
    rdv = None
    if rank == 0:
        addr = rendezvous_address(env)
        port = int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else free_port()
        rdv = (addr, port)
    addr, port = comm.bcast(rdv, root=0)
    return LaunchEnv("mpi", rank, world, local, addr, port)


def launch_env(launcher: str = "auto", env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Rank, world size, local rank and rendezvous for ``launcher`` (MPI: collective)."""
    env = os.environ if env is None else env
    launcher = detect_launcher(env) if launcher == "auto" else launcher
    if launcher == "torchrun":
        return torchrun_env(env)
    if launcher == "slurm":
        return slurm_env(env)
    if launcher == "mpi":
        return _mpi_env(env)
    if launcher == "single":
        return LaunchEnv("single", 0, 1, 0)
    raise LaunchError(f"unknown launcher {launcher!r}; expected 'auto' or one of {LAUNCHERS}")


def init_distributed(backend: str = "auto", device: str | torch.device | None = None,
                     launcher: str = "auto", timeout: timedelta = timedelta(minutes=10)) -> DistInfo:
    """Initialise the default process group for the current launch; returns DistInfo.

    Idempotent: if a group already exists, describes it (launcher "existing").
    """
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", 0))
        dev = pick_device(local, device)
        return DistInfo(rank, world, local, dev, dist.get_backend(), "existing")
    le = launch_env(launcher)
    dev = pick_device(le.local_rank, device)
    be = backend_for_device(dev.type) if backend == "auto" else backend
    if le.launcher == "single":
        dist.init_process_group(be, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        os.environ.update(MASTER_ADDR=str(le.master_addr), MASTER_PORT=str(le.master_port),
                          RANK=str(le.rank), WORLD_SIZE=str(le.world_size), LOCAL_RANK=str(le.local_rank))
        # a bound device makes the init eager: the mesh's subgroups are then split from the
        # default group (ncclCommSplit and the like) instead of each being made from scratch
        kw = {"device_id": dev} if dev.type in ("cuda", "xpu") else {}
        dist.init_process_group(be, init_method="env://", rank=le.rank, world_size=le.world_size,
                                timeout=timeout, **kw)
    return DistInfo(le.rank, le.world_size, le.local_rank, dev, be, le.launcher)


def shutdown() -> None:
    """Destroy the default process group (no-op if none)."""
    if dist.is_initialized():
        dist.destroy_process_group()
