"""SWiPe communication primitives with exact backwards, counting the bytes they move.

* ``ulysses_qkv_to_heads``: the Ulysses all-to-all of q, k, v STACKED, one collective over the
  sp group, (B, n_lw, tpp, 3, heads, dh) -> (B, n_lw, tpp*sp, 3, heads/sp, dh); backward = the
  inverse all-to-all of the gradient.
* ``ulysses_to_heads`` / ``ulysses_to_tokens``: the same for one tensor,
  (B, n_lw, tpp, heads, dh) <-> (B, n_lw, tpp*sp, heads/sp, dh). After ``to_heads`` sp rank s
  holds heads [s*h/sp, (s+1)*h/sp) of ALL tokens of its windows, pieces concatenated in sp-rank
  order, i.e. the window's quadrant-major order. Each is the other's backward.
  Copies: the send buffer is packed with ONE permute-copy; ``to_heads`` returns a strided VIEW
  of the received buffer (token-major memory, (T, B, n_lw, ..., heads/sp, dh), so that B and
  n_lw still merge into one batch dim for attention); ``to_tokens`` must copy once more, since
  the heads of the sp ranks interleave inside every token.
* ``shift_exchange``: a frame change inside a window group along a swipe.layout.Route
  (batch_isend_irecv; the rank's own tokens are copied locally while the messages are in
  flight); backward = the inverse route.
* ``send_routed`` / ``recv_routed`` (and the ``routed_send_ops`` / ``routed_recv_ops``
  building blocks): a pipeline stage sends its activation straight to the next stage's ranks
  along a Route, so a frame change at a stage boundary costs no extra bytes (every token leaves
  once, exactly as in a plain send; with sp % 4 == 0 also one message per rank). These carry no
  autograd: the pipeline executor sends gradients back itself, with ``route.inverse()`` and the
  roles of the two stages swapped.
* ``all_reduce_sum``: in-place sum over a group.

Counting (``CommCounter``), per kind ("all_to_all", "p2p", "all_reduce", ...): bytes SENT by
this rank, messages, calls, and the host wall seconds spent blocked waiting for that kind
(around the blocking call or ``wait()``; under nccl a wait only orders streams, so these
seconds are not the transfer time there). Data that stays on the rank is not counted. An
all-reduce of S bytes over n ranks is counted as 2 (n-1)/n S, the volume a bandwidth-optimal
(ring) all-reduce sends per rank, whatever algorithm the backend picks. Every primitive takes
``counter=`` (default: the process-wide ``default_counter()``), so a caller can keep one
counter per group or per phase. See docs/layout.md, "Communication primitives" for which
communication overlaps compute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from swipe.layout import Route

__all__ = [
    "KINDS", "CommCounter", "default_counter", "nbytes",
    "ulysses_qkv_to_heads", "ulysses_to_heads", "ulysses_to_tokens", "shift_exchange",
    "routed_send_ops", "routed_recv_ops", "send_routed", "recv_routed", "all_reduce_sum", "root_then_all",
    "wait_all",
]

# all_gather / reduce_scatter: the sharded stage state (FSDP2), counted by its user
KINDS = ("all_to_all", "p2p", "all_reduce", "all_gather", "reduce_scatter")


@dataclass
class CommCounter:
    """Bytes, messages, calls and blocked wall seconds per kind of communication, as sent (and
    waited for) by this rank."""

    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))

    @staticmethod
    def _check(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown communication kind {kind!r}; expected one of {KINDS}")

    def add(self, kind: str, n_bytes: int, n_messages: int, seconds: float = 0.0) -> None:
        """One call of ``kind`` sending ``n_bytes`` in ``n_messages``, blocked ``seconds``."""
        self._check(kind)
        self.bytes[kind] += int(n_bytes)
        self.messages[kind] += int(n_messages)
        self.calls[kind] += 1
        self.seconds[kind] += float(seconds)

    def add_wait(self, kind: str, seconds: float) -> None:
        """Wall seconds blocked on communication of ``kind`` counted elsewhere (a deferred wait)."""
        self._check(kind)
        self.seconds[kind] += float(seconds)

    def reset(self) -> None:
        for d in (self.bytes, self.messages, self.calls):
            for k in KINDS:
                d[k] = 0
        for k in KINDS:
            self.seconds[k] = 0.0

    def snapshot(self) -> dict[str, dict[str, float]]:
        """{kind: {"bytes", "messages", "calls", "seconds"}} copied (later traffic does not
        change it)."""
        return {k: {"bytes": self.bytes[k], "messages": self.messages[k], "calls": self.calls[k],
                    "seconds": self.seconds[k]} for k in KINDS}

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def wait_all(works, counter: "CommCounter", kind: str) -> None:
    """``wait()`` on every work, the blocked wall time added to ``counter.seconds[kind]``."""
    t0 = time.perf_counter()
    for w in works:
        w.wait()
    counter.add_wait(kind, time.perf_counter() - t0)


_DEFAULT = CommCounter()


def default_counter() -> CommCounter:
    """The process-wide counter used when a primitive gets no ``counter=``."""
    return _DEFAULT


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _group_size(group) -> int:
    return dist.get_world_size(group)


# ---- Ulysses all-to-all ---------------------------------------------------------------------
def _check5(x: torch.Tensor, what: str) -> None:
    if x.dim() != 5:
        raise ValueError(f"{what} expects (B, n_lw, tokens, heads, dh), got shape {tuple(x.shape)}")


def _a2a(send: torch.Tensor, group, counter: CommCounter) -> torch.Tensor:
    """all_to_all_single of a contiguous (sp, ...) buffer: out[j] = the chunk rank j addressed
    to me. Blocking (the caller needs the result at once: nothing to overlap it with)."""
    sp = send.shape[0]
    out = torch.empty_like(send)
    t0 = time.perf_counter()
    dist.all_to_all_single(out, send, group=group)
    counter.add("all_to_all", nbytes(send) // sp * (sp - 1), sp - 1, time.perf_counter() - t0)
    return out


def _to_heads(x: torch.Tensor, group, counter: CommCounter) -> torch.Tensor:
    """(B, n, t, *mid, h, dh) -> (B, n, sp*t, *mid, h/sp, dh), a view of the received buffer."""
    sp = _group_size(group)
    B, n, t = x.shape[:3]
    *mid, h, dh = x.shape[3:]
    if h % sp:
        raise ValueError(f"heads={h} is not divisible by the sequence-parallel size sp={sp}")
    k = len(mid)
    # chunk j = head block j of my tokens, laid out token-major (t, B, n, *mid, h/sp, dh): the
    # chunks received from sp ranks 0..sp-1, one after the other, ARE the window's sp*t tokens
    send = x.unflatten(-2, (sp, h // sp)).permute(3 + k, 2, 0, 1, *range(3, 3 + k), 4 + k, 5 + k)
    recv = _a2a(send.contiguous(), group, counter)        # the one copy: into the send buffer
    y = recv.view(sp * t, B, n, *mid, h // sp, dh)        # merging (sp, t) of a contiguous buffer
    return y.permute(1, 2, 0, *range(3, 3 + k), 3 + k, 4 + k)


def _to_tokens(y: torch.Tensor, group, counter: CommCounter) -> torch.Tensor:
    """Inverse of ``_to_heads``: (B, n, sp*t, *mid, hs, dh) -> (B, n, t, *mid, sp*hs, dh)."""
    sp = _group_size(group)
    B, n, T = y.shape[:3]
    *mid, hs, dh = y.shape[3:]
    if T % sp:
        raise ValueError(f"{T} tokens per window cannot be cut into sp={sp} pieces")
    k = len(mid)
    # chunk j = token piece j (for sp rank j), (B, n, t, *mid, hs, dh)
    send = y.unflatten(2, (sp, T // sp)).permute(2, 0, 1, 3, *range(4, 4 + k), 4 + k, 5 + k)
    recv = _a2a(send.contiguous(), group, counter)        # recv[j] = head block j of my tokens
    # heads of sp rank j go to [j*hs, (j+1)*hs) of every token: interleaved, hence a copy
    out = recv.permute(1, 2, 3, *range(4, 4 + k), 0, 4 + k, 5 + k)
    return out.reshape(B, n, T // sp, *mid, sp * hs, dh)


class _Ulysses(torch.autograd.Function):
    """``to_heads`` (or ``to_tokens``) forward; the other one is its exact backward (the
    all-to-all is a permutation of elements across ranks, its adjoint the inverse one)."""

    @staticmethod
    def forward(ctx, x, group, counter, heads: bool):
        ctx.group, ctx.counter, ctx.heads = group, counter, heads
        return (_to_heads if heads else _to_tokens)(x, group, counter)

    @staticmethod
    def backward(ctx, g):
        return (_to_tokens if ctx.heads else _to_heads)(g, ctx.group, ctx.counter), None, None, None


def ulysses_qkv_to_heads(qkv: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """q, k, v stacked, (B, n_lw, tpp, 3, heads, dh) -> (B, n_lw, tpp*sp, 3, heads/sp, dh), in
    ONE all-to-all over the sp ``group``.

    out[:, :, j*tpp:(j+1)*tpp, i] on sp rank s = qkv[:, :, :, i, s*h/sp:(s+1)*h/sp] of sp rank j.
    The result is a strided view of the received buffer (not contiguous); ``unbind(3)`` gives
    q, k, v as views. Backward: the inverse all-to-all of the gradient.
    """
    if qkv.dim() != 6 or qkv.shape[3] != 3:
        raise ValueError(f"ulysses_qkv_to_heads expects (B, n_lw, tokens, 3, heads, dh), got shape "
                         f"{tuple(qkv.shape)}")
    if _group_size(group) == 1:  # nothing to move (and no autograd node needed)
        return qkv
    return _Ulysses.apply(qkv, group, counter or _DEFAULT, True)


def ulysses_to_heads(x: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """(B, n_lw, tpp, heads, dh) -> (B, n_lw, tpp*sp, heads/sp, dh) over the sp ``group``.

    out[:, :, j*tpp:(j+1)*tpp] on sp rank s = x[:, :, :, s*h/sp:(s+1)*h/sp] of sp rank j
    (a strided view of the received buffer). Backward: ``ulysses_to_tokens`` of the gradient.
    """
    _check5(x, "ulysses_to_heads")
    if _group_size(group) == 1:
        return x
    return _Ulysses.apply(x, group, counter or _DEFAULT, True)


def ulysses_to_tokens(x: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """Inverse of ``ulysses_to_heads``: (B, n_lw, tpp*sp, heads/sp, dh) -> (B, n_lw, tpp, heads, dh)."""
    _check5(x, "ulysses_to_tokens")
    if _group_size(group) == 1:
        return x
    return _Ulysses.apply(x, group, counter or _DEFAULT, False)


# ---- routed point-to-point ------------------------------------------------------------------
def _flat_slots(x: torch.Tensor, what: str) -> torch.Tensor:
    """(B, n_lw, tpp, *features) -> (B, n_lw*tpp, *features) view."""
    if x.dim() < 3:
        raise ValueError(f"{what} expects (B, n_lw, tokens_per_piece, ...), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def _slots(a, device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.long).to(device)


def _check_route_fits(route: Route, rank: int, n_slots: int, what: str) -> None:
    for m in route.messages:
        if m.src == rank and m.src_slots.size and m.src_slots.max() >= n_slots:
            raise ValueError(f"{what}: the route addresses slot {int(m.src_slots.max())} but the "
                             f"tensor holds {n_slots} tokens (n_lw * tokens_per_piece): wrong layout?")


def _exchange(x: torch.Tensor, route: Route, rank: int, group, counter: CommCounter) -> torch.Tensor:
    flat = _flat_slots(x, "shift_exchange")
    _check_route_fits(route, rank, flat.shape[1], "shift_exchange")
    out = torch.empty_like(flat)
    ops, pending, local, sent = [], [], [], 0
    for m in route.sends(rank):
        if m.dst == rank:  # my own tokens: copied below, while the messages travel
            local.append(m)
            continue
        buf = flat[:, _slots(m.src_slots, x.device)].contiguous()  # a gather (copy) to send
        ops.append(dist.P2POp(dist.isend, buf, group=group, group_peer=m.dst))
        sent += nbytes(buf)
    n_msg = len(ops)
    for m in route.recvs(rank):
        if m.src == rank:
            continue
        buf = flat.new_empty((flat.shape[0], m.n_tokens, *flat.shape[2:]))
        ops.append(dist.P2POp(dist.irecv, buf, group=group, group_peer=m.src))
        pending.append((m, buf))
    works = dist.batch_isend_irecv(ops) if ops else []
    for m in local:  # independent of the messages: overlaps them
        out[:, _slots(m.dst_slots, x.device)] = flat[:, _slots(m.src_slots, x.device)]
    if ops:
        t0 = time.perf_counter()
        for w in works:
            w.wait()
        counter.add("p2p", sent, n_msg, time.perf_counter() - t0)
    for m, buf in pending:
        out[:, _slots(m.dst_slots, x.device)] = buf
    return out.reshape(x.shape)


class _ShiftExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, route, rank, group, counter):
        ctx.route, ctx.rank, ctx.group, ctx.counter = route, rank, group, counter
        return _exchange(x, route, rank, group, counter)

    @staticmethod
    def backward(ctx, g):
        # the forward is a permutation of tokens across ranks: its adjoint is the inverse route
        return _exchange(g.contiguous(), ctx.route.inverse(), ctx.rank, ctx.group, ctx.counter), \
            None, None, None, None


def shift_exchange(x: torch.Tensor, route: Route, rank: int, group=None,
                   counter: CommCounter | None = None) -> torch.Tensor:
    """Re-lay tokens (B, n_lw, tpp, ...) from ``route.src_frame`` to ``route.dst_frame``.

    ``rank`` is this process's rank in ``group`` (the window group; route ranks are group
    ranks). Every rank of the group must call it with the same route. Backward: the inverse
    route applied to the gradient.
    """
    return _ShiftExchange.apply(x, route, rank, group, counter or _DEFAULT)


def _peer(ranks: Sequence[int], r: int, what: str) -> int:
    if not 0 <= r < len(ranks):
        raise ValueError(f"{what}: the route names window rank {r} but {len(ranks)} peer ranks were given")
    return int(ranks[r])


def routed_send_ops(x: torch.Tensor, route: Route, window_rank: int, dst_ranks: Sequence[int],
                    counter: CommCounter | None = None) -> list[dist.P2POp]:
    """P2P send ops moving this rank's tokens (B, n_lw, tpp, ...) along ``route``.

    ``dst_ranks[r']`` is the GLOBAL rank that plays window rank r' of the receiving stage.
    Counted as sent when the ops are built (pass them to ``dist.batch_isend_irecv``).
    """
    flat = _flat_slots(x, "routed_send_ops")
    _check_route_fits(route, window_rank, flat.shape[1], "routed_send_ops")
    me = dist.get_rank()
    ops, sent = [], 0
    for m in route.sends(window_rank):
        peer = _peer(dst_ranks, m.dst, "routed_send_ops")
        if peer == me:
            raise ValueError("routed_send_ops: a rank cannot send to itself; use shift_exchange "
                             "for a frame change inside one stage")
        buf = flat[:, _slots(m.src_slots, x.device)].contiguous()
        ops.append(dist.P2POp(dist.isend, buf, peer=peer))
        sent += nbytes(buf)
    (counter or _DEFAULT).add("p2p", sent, len(ops))
    return ops


def routed_recv_ops(out: torch.Tensor, route: Route, window_rank: int, src_ranks: Sequence[int]
                    ) -> tuple[list[dist.P2POp], Callable[[], torch.Tensor]]:
    """P2P receive ops filling ``out`` (B, n_lw, tpp, ...) along ``route``, and a ``finish()``
    to call after the ops completed: it writes the received tokens into ``out`` and returns it.

    ``src_ranks[r]`` is the GLOBAL rank that plays window rank r of the sending stage.
    """
    if not out.is_contiguous():
        raise ValueError("routed_recv_ops: `out` must be contiguous (it is filled in place)")
    flat = _flat_slots(out, "routed_recv_ops")
    ops, pending = [], []
    for m in route.recvs(window_rank):
        buf = flat.new_empty((flat.shape[0], m.n_tokens, *flat.shape[2:]))
        ops.append(dist.P2POp(dist.irecv, buf, peer=_peer(src_ranks, m.src, "routed_recv_ops")))
        pending.append((m, buf))

    def finish() -> torch.Tensor:
        for m, buf in pending:
            flat[:, _slots(m.dst_slots, out.device)] = buf
        return out

    return ops, finish


def send_routed(x: torch.Tensor, route: Route, window_rank: int, dst_ranks: Sequence[int],
                counter: CommCounter | None = None) -> None:
    """Blocking re-addressed send of a stage's activation (see ``routed_send_ops``)."""
    ops = routed_send_ops(x, route, window_rank, dst_ranks, counter)
    wait_all(dist.batch_isend_irecv(ops) if ops else [], counter or _DEFAULT, "p2p")


def recv_routed(out: torch.Tensor, route: Route, window_rank: int, src_ranks: Sequence[int],
                counter: CommCounter | None = None) -> torch.Tensor:
    """Blocking receive into ``out`` (B, n_lw, tpp, ...) of a routed send; returns ``out``
    (the wait is timed into ``counter``; receives send no bytes)."""
    ops, finish = routed_recv_ops(out, route, window_rank, src_ranks)
    wait_all(dist.batch_isend_irecv(ops) if ops else [], counter or _DEFAULT, "p2p")
    return finish()


# ---- all-reduce -----------------------------------------------------------------------------
def all_reduce_sum(tensor: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """In-place sum of ``tensor`` over ``group``; returns it. Counted as 2 (n-1)/n * bytes."""
    n = _group_size(group)
    t0 = time.perf_counter()
    if n > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    (counter or _DEFAULT).add("all_reduce", 2 * (n - 1) * nbytes(tensor) // n, 2 * (n - 1),
                              time.perf_counter() - t0)
    return tensor


def root_then_all(fn, distributed: bool = True):
    """``fn()`` on rank 0 only, its result on every rank; an exception there is raised on every
    rank (instead of leaving the others waiting in the next collective until the timeout)."""
    if not distributed:
        return fn()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box = [("ok", fn())]
        except Exception as e:  # shared, then raised everywhere
            box = [("error", e)]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value
