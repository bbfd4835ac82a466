"""Pipeline stages and the schedule executor with re-addressed (frame-changing) sends.

Stages (pure, no process group):

* ``stage_split(n_blocks, pp, split)`` -> block range of every stage. Default (docs/pipeline.md,
  "Stage split"): pp = 1 everything on one stage; pp = 2 the blocks split evenly over the two
  stages (stage 0 takes the odd one); pp >= 3 stage 0 = input embedding only, the last stage =
  output head (+ loss) only, the pp - 2 middle stages equal numbers of blocks (the first ones
  take one more when it does not divide). ``split`` = explicit blocks per stage.
* ``plan_stages(...)`` -> one ``StagePlan`` per stage: its blocks, the frame its input arrives
  in (``start_frame``) and the frame its output leaves in (``end_frame``). The input of stage 0
  and the output of the last stage (head, labels) are in ``io_frame`` (0). Between stages p and
  p+1 the activation moves along ``Route(end_frame[p] -> start_frame[p+1])``: a frame change at
  a stage boundary is folded into the pipeline send (same bytes as a plain send to the twin
  rank); frame changes inside a stage are the caller's (``ctx.change_frame``).

Executor (``PipelineExecutor``): runs an EXISTING instruction stream, DeepSpeed's
``TrainSchedule`` (1F1B) or ``InferenceSchedule`` (forward only). In both, every p2p
instruction of step t+1 refers to tensors computed by step t or earlier (a send carries the
output of step t's compute; a receive fills the input of step t+1's compute), and the k-th send
of a kind on one stage matches the k-th receive on its neighbour. The executor therefore
posts step t+1's p2p while step t runs: its receives BEFORE step t's compute (with gloo,
"posting ahead": the neighbour's data then travels while this rank computes), its sends right
after it, and waits for a received tensor only where it is first used. With nccl (any backend
but gloo) a step's sends and receives go as ONE group after step t's compute, as nccl runs
the operations of one communicator in issue order and a receive issued ahead of a send would
deadlock; a wait there only orders streams. Instructions of one kind visit micro-batches in
order (the k-th ForwardPass is micro-batch k, the k-th SendGrad returns the input gradient of
micro-batch k, ...), which is how the executor keys its buffers; DeepSpeed's buffer ids are
not needed. Gradients flow back on the inverse routes. Knows nothing about weather or the
model. See docs/pipeline.md, "Executor".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from swipe.comm import CommCounter, default_counter, routed_recv_ops, routed_send_ops, wait_all
from swipe.layout import Route, WindowLayout

__all__ = ["PipelineError", "stage_split", "StagePlan", "plan_stages", "stage_routes",
           "inner_frame_changes", "PipelineExecutor", "train_schedule", "inference_schedule"]


class PipelineError(ValueError):
    """A stage split or pipeline setup that cannot work."""


# ---- stage split (pure) ---------------------------------------------------------------------
def _even(n: int, k: int) -> list[int]:
    """n items over k bins as evenly as possible, the first bins taking the remainder."""
    return [n // k + (i < n % k) for i in range(k)]


def stage_split(n_blocks: int, pp: int, split: Sequence[int] | None = None) -> list[range]:
    """Block index range of each of the ``pp`` stages (see module docstring)."""
    if n_blocks < 0 or pp < 1:
        raise PipelineError(f"need n_blocks >= 0 and pp >= 1, got n_blocks={n_blocks}, pp={pp}")
    if split is not None:
        counts = [int(c) for c in split]
        if len(counts) != pp:
            raise PipelineError(f"pipeline split {list(split)} has {len(counts)} entries for pp={pp} stages")
        if any(c < 0 for c in counts) or sum(counts) != n_blocks:
            raise PipelineError(f"pipeline split {list(split)} must be non-negative block counts "
                                f"summing to the model's {n_blocks} blocks")
    elif pp == 1:
        counts = [n_blocks]
    elif pp == 2:
        counts = _even(n_blocks, 2)
    else:
        if n_blocks < pp - 2:
            raise PipelineError(f"pp={pp} needs at least {pp - 2} blocks for its middle stages "
                                f"(stage 0 = embedding, last = head), the model has {n_blocks}")
        counts = [0, *_even(n_blocks, pp - 2), 0]
    out, start = [], 0
    for c in counts:
        out.append(range(start, start + c))
        start += c
    return out


@dataclass(frozen=True)
class StagePlan:
    """What stage ``index`` of ``n_stages`` runs and in which frames its activations travel."""

    index: int
    n_stages: int
    blocks: range
    start_frame: int   # frame of the stage's input (stage 0: the data frame)
    end_frame: int     # frame of the stage's output (last stage: the head/label frame)

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.n_stages - 1


def plan_stages(n_blocks: int, pp: int, block_frame: Callable[[int], int],
                split: Sequence[int] | None = None, io_frame: int = 0) -> list[StagePlan]:
    """Stage plans; ``block_frame(i)`` is the frame block i works in."""
    ranges = stage_split(n_blocks, pp, split)
    plans: list[StagePlan] = []
    prev_end = io_frame
    for p, r in enumerate(ranges):
        last = p == pp - 1
        if p == 0:
            start = io_frame
        elif len(r):
            start = block_frame(r[0])     # the boundary route lands in the first block's frame
        else:
            start = io_frame if last else prev_end
        if last:
            end = io_frame
        elif len(r):
            end = block_frame(r[-1])
        else:
            end = start
        plans.append(StagePlan(p, pp, r, start, end))
        prev_end = end
    return plans


def inner_frame_changes(plan: StagePlan, block_frame: Callable[[int], int]) -> int:
    """Frame changes the stage does itself (standalone exchanges), between its blocks and at its ends."""
    n, frame = 0, plan.start_frame
    for i in plan.blocks:
        n += block_frame(i) != frame
        frame = block_frame(i)
    return n + (frame != plan.end_frame)


def stage_routes(layout: WindowLayout, plans: Sequence[StagePlan], stage: int
                 ) -> tuple[Route | None, Route | None]:
    """(route into this stage from the previous one, route out of it to the next); None at the ends."""
    recv = layout.route(plans[stage - 1].end_frame, plans[stage].start_frame) if stage > 0 else None
    send = (layout.route(plans[stage].end_frame, plans[stage + 1].start_frame)
            if stage < len(plans) - 1 else None)
    return recv, send


# ---- instruction streams ---------------------------------------------------------------------
def _ds_schedule():
    # DeepSpeed's schedule module is pure Python; importing it pulls the deepspeed package in,
    # which picks its accelerator: say CPU unless the caller chose one.
    import os
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    from deepspeed.runtime.pipe import schedule
    return schedule


def train_schedule(micro_batches: int, stages: int, stage: int):
    """DeepSpeed's synchronous 1F1B ``TrainSchedule`` for this stage."""
    return _ds_schedule().TrainSchedule(micro_batches=micro_batches, stages=stages, stage_id=stage)


def inference_schedule(micro_batches: int, stages: int, stage: int):
    """DeepSpeed's forward-only ``InferenceSchedule`` for this stage."""
    return _ds_schedule().InferenceSchedule(micro_batches=micro_batches, stages=stages, stage_id=stage)


class _Batch:
    """The works of one ``batch_isend_irecv``, waited for at most once (waiting on a finished
    gloo receive again would block for a next message)."""

    def __init__(self, works):
        self.works, self.done = works, False

    def wait(self, counter: CommCounter) -> float:
        """Wait (once); returns the wall seconds blocked (0 when already waited for)."""
        if self.done:
            return 0.0
        t0 = time.perf_counter()
        wait_all(self.works, counter, "p2p")
        self.done = True
        return time.perf_counter() - t0


# ---- executor ---------------------------------------------------------------------------------
class PipelineExecutor:
    """Runs one stage of a pipeline for one batch of micro-batches.

    ``forward(mb, x)`` computes this stage on micro-batch ``mb``; ``x`` is the received
    activation (None on stage 0) and the return value is the activation to send (B, n_lw, tpp,
    ...) or, on the last stage, a scalar loss (training) / any tensor (inference), collected in
    order and returned by ``train``/``infer``. ``act_shape(mb)`` is the shape of the activation
    this stage receives for micro-batch mb (the same dtype as ``dtype``).

    ``prev_ranks`` / ``next_ranks``: GLOBAL ranks of the previous / next stage indexed by
    window-group rank; ``recv_route`` / ``send_route``: the routes into / out of this stage
    (``stage_routes``); ``window_rank``: this rank's index in its window group.
    ``post_ahead``: post a step's receives before the previous step's compute (module
    docstring); None = exactly when the default process group is gloo, the one backend here
    whose posted operations complete in any order; True elsewhere is refused.
    """

    def __init__(self, stage: int, n_stages: int, window_rank: int, *,
                 prev_ranks: Sequence[int] | None = None, next_ranks: Sequence[int] | None = None,
                 recv_route: Route | None = None, send_route: Route | None = None,
                 counter: CommCounter | None = None, post_ahead: bool | None = None):
        if not 0 <= stage < n_stages:
            raise PipelineError(f"stage {stage} out of range for {n_stages} stages")
        if stage > 0 and (prev_ranks is None or recv_route is None):
            raise PipelineError(f"stage {stage} needs prev_ranks and recv_route")
        if stage < n_stages - 1 and (next_ranks is None or send_route is None):
            raise PipelineError(f"stage {stage} needs next_ranks and send_route")
        self.stage, self.n_stages, self.window_rank = stage, n_stages, window_rank
        self.prev_ranks, self.next_ranks = prev_ranks, next_ranks
        self.recv_route, self.send_route = recv_route, send_route
        self.grad_send_route = recv_route.inverse() if recv_route is not None else None
        self.grad_recv_route = send_route.inverse() if send_route is not None else None
        self.counter = counter
        self.wait_s = 0.0
        self.post_ahead = post_ahead

    def _posts_ahead(self) -> bool:
        backend = dist.get_backend()
        if self.post_ahead is None:
            return backend == "gloo"
        if self.post_ahead and backend != "gloo":
            raise PipelineError(
                f"post_ahead=True needs the gloo backend, not {backend!r}: there a receive posted "
                f"before an earlier step's send on the same communicator can deadlock (operations "
                f"of one communicator run in issue order); use post_ahead=None or False")
        return self.post_ahead

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.n_stages - 1

    def train(self, n_micro: int, forward: Callable, act_shape: Callable[[int], tuple],
              dtype: torch.dtype, device: torch.device | str = "cpu",
              before_backward: Callable[[int, bool], None] | None = None) -> list[torch.Tensor]:
        """Forward and backward of ``n_micro`` micro-batches (1F1B); gradients accumulate in
        the parameters. ``before_backward(k, last)`` runs before micro-batch k's backward
        (``last``: the step's final one; e.g. to reduce sharded gradients once per step).
        Returns the last stage's detached losses (empty list elsewhere)."""
        return self._run(train_schedule(n_micro, self.n_stages, self.stage), True,
                         forward, act_shape, dtype, device, before_backward, n_micro)

    @torch.no_grad()
    def infer(self, n_micro: int, forward: Callable, act_shape: Callable[[int], tuple],
              dtype: torch.dtype, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Forward only; returns the last stage's outputs (empty list elsewhere)."""
        return self._run(inference_schedule(n_micro, self.n_stages, self.stage), False,
                         forward, act_shape, dtype, device)

    # one schedule -------------------------------------------------------------------------------
    def _run(self, schedule, train: bool, forward, act_shape, dtype, device, before_backward=None,
             n_micro: int = 0) -> list[torch.Tensor]:
        S = _ds_schedule()
        self.wait_s = 0.0   # seconds blocked on this schedule's sends and receives (bubble + transfer)
        recv_types, send_types = (S.RecvActivation, S.RecvGrad), (S.SendActivation, S.SendGrad)
        steps = [list(cmds) for cmds in schedule.steps()]
        ahead = self._posts_ahead()
        ctr = self.counter if self.counter is not None else default_counter()
        inputs: dict[int, torch.Tensor] = {}    # received activation per micro-batch (train: for SendGrad)
        outputs: dict[int, torch.Tensor] = {}   # this stage's output per micro-batch
        # posted receives not consumed yet: (kind, mb) -> (their batch, finish)
        pending: dict[tuple[str, int], tuple[_Batch, Callable[[], torch.Tensor]]] = {}
        sends: list[_Batch] = []                # posted batches holding sends, not waited for yet
        posted: set[tuple[int, int]] = set()    # (step, instruction index) already posted
        nxt = dict.fromkeys(("send_act", "recv_act", "send_grad", "recv_grad", "fwd", "bwd"), 0)
        results: list[torch.Tensor] = []

        def take(kind: str) -> int:
            k = nxt[kind]
            nxt[kind] += 1
            return k

        def build(cmd) -> tuple[list, tuple[str, int] | None, Callable | None]:
            """P2P ops of one instruction (and, for a receive, its key and finish)."""
            if isinstance(cmd, S.SendActivation):
                mb = take("send_act")
                out = outputs[mb] if train else outputs.pop(mb)
                return routed_send_ops(out.detach(), self.send_route, self.window_rank,
                                       self.next_ranks, ctr), None, None
            if isinstance(cmd, S.SendGrad):
                mb = take("send_grad")
                x = inputs.pop(mb)
                g = x.grad if x.grad is not None else torch.zeros_like(x)
                return routed_send_ops(g, self.grad_send_route, self.window_rank,
                                       self.prev_ranks, ctr), None, None
            if isinstance(cmd, S.RecvActivation):
                mb = take("recv_act")
                buf = torch.empty(act_shape(mb), dtype=dtype, device=device)
                ops, fin = routed_recv_ops(buf, self.recv_route, self.window_rank, self.prev_ranks)
                return ops, ("act", mb), fin
            mb = take("recv_grad")
            ops, fin = routed_recv_ops(torch.empty_like(outputs[mb]), self.grad_recv_route,
                                       self.window_rank, self.next_ranks)
            return ops, ("grad", mb), fin

        def post(t: int, kinds: tuple, last_chance: bool) -> None:
            """Post step t's not yet posted instructions of ``kinds`` as one batch."""
            if t >= len(steps):
                return
            ops, recvs, has_send = [], [], False
            for i, cmd in enumerate(steps[t]):
                if not isinstance(cmd, kinds) or (t, i) in posted:
                    continue
                if isinstance(cmd, S.RecvGrad) and nxt["recv_grad"] not in outputs:
                    if last_chance:
                        raise PipelineError(f"stage {self.stage}: the schedule receives the gradient "
                                            f"of micro-batch {nxt['recv_grad']} before its forward")
                    continue  # its buffer takes the shape of a forward not run yet: post it later
                posted.add((t, i))
                o, key, fin = build(cmd)
                ops += o
                if key is None:
                    has_send = True
                else:
                    recvs.append((key, fin))
            if not ops:
                return
            batch = _Batch(dist.batch_isend_irecv(ops))
            for key, fin in recvs:
                pending[key] = (batch, fin)
            if has_send:
                sends.append(batch)

        def received(key: tuple[str, int]) -> torch.Tensor:
            batch, fin = pending.pop(key)
            self.wait_s += batch.wait(ctr)
            return fin()

        post(0, recv_types + send_types, True)
        for t, cmds in enumerate(steps):
            if ahead:   # step t+1's inputs travel while step t computes
                post(t + 1, recv_types, False)
            for cmd in cmds:
                if isinstance(cmd, S.ForwardPass):
                    mb = take("fwd")
                    x = None
                    if not self.is_first:
                        x = received(("act", mb))
                        if train:
                            inputs[mb] = x.requires_grad_(True)
                    out = forward(mb, x)
                    if self.is_last:
                        results.append(out.detach())
                        if train:
                            outputs[mb] = out
                    else:
                        outputs[mb] = out
                elif isinstance(cmd, S.BackwardPass):
                    mb = take("bwd")
                    out = outputs.pop(mb)
                    if before_backward is not None:
                        before_backward(mb, nxt["bwd"] == n_micro)
                    if self.is_last:
                        out.backward()
                    else:
                        torch.autograd.backward(out, received(("grad", mb)))
                # p2p: posted ahead; LoadMicroBatch: forward(mb, ...) loads its own data;
                # Reduce*/OptimizerStep: the caller reduces gradients and steps after the batch.
            # the previous sends had this step's compute to complete (their receives were posted
            # no later than they were): bounded buffers, and errors surface here
            while sends:
                self.wait_s += sends.pop().wait(ctr)
            post(t + 1, send_types + recv_types, True)
        if outputs or pending or (train and inputs):
            raise PipelineError(f"stage {self.stage}: schedule ended with unconsumed buffers "
                                f"(outputs {sorted(outputs)}, received {sorted(pending)}, "
                                f"inputs {sorted(inputs)})")
        return results
