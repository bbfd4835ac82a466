"""SWiPe communication primitives with exact backwards, counting the bytes they move.

* ``ulysses_to_heads`` / ``ulysses_to_tokens``: the Ulysses all-to-all over the sp group,
  (B, n_lw, tpp, heads, dh) <-> (B, n_lw, tpp*sp, heads/sp, dh). After ``to_heads`` sp rank s
  holds heads [s*h/sp, (s+1)*h/sp) of ALL tokens of its windows, pieces concatenated in sp-rank
  order, i.e. the window's quadrant-major order. Each is the other's backward.
* ``shift_exchange``: a frame change inside a window group along a swipe.layout.Route
  (batch_isend_irecv; the rank's own tokens are copied locally); backward = the inverse route.
* ``send_routed`` / ``recv_routed`` (and the ``routed_send_ops`` / ``routed_recv_ops``
  building blocks): a pipeline stage sends its activation straight to the next stage's ranks
  along a Route, so a frame change at a stage boundary costs no extra bytes (every token leaves
  once, exactly as in a plain send; with sp % 4 == 0 also one message per rank). These carry no
  autograd: the pipeline executor sends gradients back itself, with ``route.inverse()`` and the
  roles of the two stages swapped.
* ``all_reduce_sum``: in-place sum over a group.

Byte counting (``CommCounter``): bytes SENT by this rank per call, by kind ("all_to_all",
"p2p", "all_reduce"); data that stays on the rank is not counted. An all-reduce of S bytes over
n ranks is counted as 2 (n-1)/n S, the volume a bandwidth-optimal (ring) all-reduce sends per
rank, whatever algorithm the backend picks. Every primitive takes ``counter=`` (default: the
process-wide ``default_counter()``), so a caller can keep one counter per group or per phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from swipe.layout import Route

__all__ = [
    "KINDS", "CommCounter", "default_counter", "nbytes",
    "ulysses_to_heads", "ulysses_to_tokens", "shift_exchange",
    "routed_send_ops", "routed_recv_ops", "send_routed", "recv_routed", "all_reduce_sum", "root_then_all",
]

# all_gather / reduce_scatter: the sharded stage state (FSDP2), counted by its user
KINDS = ("all_to_all", "p2p", "all_reduce", "all_gather", "reduce_scatter")


@dataclass
class CommCounter:
    """Bytes, messages and calls per kind of communication, as sent by this rank."""

    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def add(self, kind: str, n_bytes: int, n_messages: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown communication kind {kind!r}; expected one of {KINDS}")
        self.bytes[kind] += int(n_bytes)
        self.messages[kind] += int(n_messages)
        self.calls[kind] += 1

    def reset(self) -> None:
        for d in (self.bytes, self.messages, self.calls):
            for k in KINDS:
                d[k] = 0

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{kind: {"bytes", "messages", "calls"}} copied (later traffic does not change it)."""
        return {k: {"bytes": self.bytes[k], "messages": self.messages[k], "calls": self.calls[k]}
                for k in KINDS}

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


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


def _a2a_first_dim(chunks: torch.Tensor, group, counter: CommCounter) -> torch.Tensor:
    """all_to_all_single on the leading (sp) dim: out[j] = chunk that rank j addressed to me."""
    sp = chunks.shape[0]
    chunks = chunks.contiguous()
    out = torch.empty_like(chunks)
    dist.all_to_all_single(out, chunks, group=group)
    counter.add("all_to_all", nbytes(chunks) // sp * (sp - 1), sp - 1)
    return out


def _to_heads(x: torch.Tensor, group, counter: CommCounter) -> torch.Tensor:
    sp = _group_size(group)
    B, n, t, h, dh = x.shape
    if h % sp:
        raise ValueError(f"heads={h} is not divisible by the sequence-parallel size sp={sp}")
    if sp == 1:
        return x
    # chunk j = heads of sp rank j: (sp, B, n, t, h/sp, dh)
    send = x.reshape(B, n, t, sp, h // sp, dh).permute(3, 0, 1, 2, 4, 5)
    recv = _a2a_first_dim(send, group, counter)  # recv[j] = piece j of my heads
    return recv.permute(1, 2, 0, 3, 4, 5).reshape(B, n, sp * t, h // sp, dh)


def _to_tokens(x: torch.Tensor, group, counter: CommCounter) -> torch.Tensor:
    sp = _group_size(group)
    B, n, T, hs, dh = x.shape
    if T % sp:
        raise ValueError(f"{T} tokens per window cannot be cut into sp={sp} pieces")
    if sp == 1:
        return x
    send = x.reshape(B, n, sp, T // sp, hs, dh).permute(2, 0, 1, 3, 4, 5)  # chunk j = piece j
    recv = _a2a_first_dim(send, group, counter)  # recv[j] = head block j of my piece
    return recv.permute(1, 2, 3, 0, 4, 5).reshape(B, n, T // sp, sp * hs, dh)


class _ToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, counter):
        ctx.group, ctx.counter = group, counter
        return _to_heads(x, group, counter)

    @staticmethod
    def backward(ctx, g):
        return _to_tokens(g, ctx.group, ctx.counter), None, None


class _ToTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, counter):
        ctx.group, ctx.counter = group, counter
        return _to_tokens(x, group, counter)

    @staticmethod
    def backward(ctx, g):
        return _to_heads(g, ctx.group, ctx.counter), None, None


def ulysses_to_heads(x: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """(B, n_lw, tpp, heads, dh) -> (B, n_lw, tpp*sp, heads/sp, dh) over the sp ``group``.

    out[:, :, j*tpp:(j+1)*tpp] on sp rank s = x[:, :, :, s*h/sp:(s+1)*h/sp] of sp rank j.
    Backward: ``ulysses_to_tokens`` of the gradient.
    """
    _check5(x, "ulysses_to_heads")
    if _group_size(group) == 1:  # nothing to move (and no autograd node needed)
        return x
    return _ToHeads.apply(x, group, counter or _DEFAULT)


def ulysses_to_tokens(x: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """Inverse of ``ulysses_to_heads``: (B, n_lw, tpp*sp, heads/sp, dh) -> (B, n_lw, tpp, heads, dh)."""
    _check5(x, "ulysses_to_tokens")
    if _group_size(group) == 1:
        return x
    return _ToTokens.apply(x, group, counter or _DEFAULT)


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
    ops, pending, sent, n_msg = [], [], 0, 0
    for m in route.sends(rank):
        buf = flat[:, _slots(m.src_slots, x.device)]
        if m.dst == rank:  # my own tokens: a local copy
            out[:, _slots(m.dst_slots, x.device)] = buf
            continue
        buf = buf.contiguous()
        ops.append(dist.P2POp(dist.isend, buf, group=group, group_peer=m.dst))
        sent += nbytes(buf)
        n_msg += 1
    for m in route.recvs(rank):
        if m.src == rank:
            continue
        buf = flat.new_empty((flat.shape[0], m.n_tokens, *flat.shape[2:]))
        ops.append(dist.P2POp(dist.irecv, buf, group=group, group_peer=m.src))
        pending.append((m, buf))
    if ops:
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        counter.add("p2p", sent, n_msg)
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
    for w in dist.batch_isend_irecv(ops) if ops else []:
        w.wait()


def recv_routed(out: torch.Tensor, route: Route, window_rank: int, src_ranks: Sequence[int]) -> torch.Tensor:
    """Blocking receive into ``out`` (B, n_lw, tpp, ...) of a routed send; returns ``out``."""
    ops, finish = routed_recv_ops(out, route, window_rank, src_ranks)
    for w in dist.batch_isend_irecv(ops) if ops else []:
        w.wait()
    return finish()


# ---- all-reduce -----------------------------------------------------------------------------
def all_reduce_sum(tensor: torch.Tensor, group=None, counter: CommCounter | None = None) -> torch.Tensor:
    """In-place sum of ``tensor`` over ``group``; returns it. Counted as 2 (n-1)/n * bytes."""
    n = _group_size(group)
    if n > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    (counter or _DEFAULT).add("all_reduce", 2 * (n - 1) * nbytes(tensor) // n, 2 * (n - 1))
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
