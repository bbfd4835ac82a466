"""Layout-independent random numbers: counter-based per-token noise and per-sample noise levels.

Noise (docs/training.md, "Keyed noise") is a pure function of integers, computed on the
rank's device for its own tokens only:

    k = key_seed("noise", keys) = k_hi 2^32 + k_lo                    (once per sample, host)
    (T0, T1) = Philox-2x32-10(counter = (g, k_hi), key = k_lo)       (per global token id g)
    j = c // 2;  h_r = mix32(T0 ^ w0(j)),  h_a = mix32(T1 ^ w1(j))    (per channel pair)
    u = (h_r + 1/2) 2^-32 in (0, 1],  theta = 2 pi (h_a + 1/2) 2^-32
    z(keys, g, c) = sqrt(-2 ln u) * (cos theta if c is even else sin theta)   (Box-Muller, fp32)

with w_i(j) = j G_i mod 2^32 (Weyl steps) and mix32 a xorshift-multiply finaliser. g = y W + x
is the token's id in the whole H x W field, so every layout (wy, wx, sp, window size) gives a
token the same value. All integer arithmetic uses 32-bit lanes in int64 tensors: every
product is < 2^63 in magnitude (multipliers >= 2^31 are used as m - 2^32) and is masked back
to 32 bits, so no operation relies on overflow.

ln, cos and sin come from small tables and short polynomials evaluated with fp32 +, -, *
and gathers (`_ln_uniform`, `_cos_sin`), the root as q * rsqrt(q): no math-library kernel
(MKL's vector functions on the CPU run an OpenMP team of their own; their last bits depend
on the library and the device), so the values are the same on every CPU path and agree with
CUDA up to the rounding of rsqrt.

Noise levels: one sigma per sample from a `torch.Generator` keyed by the sample's keys, so every
rank of that sample agrees.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
from typing import Sequence

import numpy as np
import torch

from swipe.layout import WindowLayout

__all__ = ["key_seed", "keyed_generator", "philox2x32", "token_noise", "rank_token_ids", "window_noise",
           "members_noise", "field_noise", "sample_sigma", "sample_sigmas"]

_M32 = 0xFFFFFFFF
_PHILOX_M = 0xD256D193          # Philox-2x32 multiplier
_PHILOX_W = 0x9E3779B9          # Philox-2x32 key increment (Weyl step)
_PHILOX_ROUNDS = 10
_MIX_M = (0x7FEB352D, 0x846CA68B)
_WEYL = (0x9E3779B9, 0x7F4A7C15)  # w0, w1: odd, so j -> w_i(j) is injective mod 2^32
_MAX_CHANNELS = 1 << 16
_LN2 = math.log(2.0)
_LN_BITS, _ANGLE_BITS = 8, 10  # table sizes 2^8 (mantissa of u) and 2^10 (sectors of the circle)
# Channel pairs computed at once: on the CPU a chunk's int64 temporaries stay in cache (~2 MB).
_CHUNK_PAIRS = {"cpu": 1 << 18}
_CHUNK_PAIRS_DEFAULT = 1 << 23


def _signed32(m: int) -> int:
    """A 32-bit multiplier as an int64 factor m' = m mod 2^32 with |m'| < 2^31: x m' fits int64 for x < 2^32."""
    return m - (1 << 32) if m >= 1 << 31 else m


def key_seed(tag: str, keys: Sequence[int]) -> int:
    """Stable 63-bit seed from a tag and a tuple of integers (blake2b; not Python's hash)."""
    parts = []
    for k in keys:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (numbers.Integral, np.integer)):
            raise TypeError(f"random-stream keys must be integers, got {k!r} in {tuple(keys)}")
        parts.append(str(int(k)))
    digest = hashlib.blake2b(f"{tag}|{','.join(parts)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def keyed_generator(tag: str, keys: Sequence[int]) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(key_seed(tag, keys))
    return g


def philox2x32(x0: torch.Tensor, x1: torch.Tensor, round_keys: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Philox-2x32 with len(round_keys) rounds on int64 tensors holding 32-bit words.

    Round: (hi, lo) = (M x0) split into 32-bit halves; x0 <- hi ^ k_r ^ x1, x1 <- lo, with
    k_r = k + r W mod 2^32 given per round (ints or tensors broadcasting with x0, x1).
    x0 (M - 2^32) = x0 M - x0 2^32 fits int64, so lo = its low word and hi = (it >> 32) + x0.
    """
    m = _signed32(_PHILOX_M)
    for k in round_keys:
        p = x0 * m
        x0 = ((p >> 32) + x0) ^ x1 ^ k  # all three < 2^32: no mask needed
        x1 = p.bitwise_and_(_M32)
    return x0, x1


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """In place: x ^= x >> 16; x *= m1; x ^= x >> 15; x *= m2; x ^= x >> 16 (mod 2^32), a bijection of [0, 2^32)."""
    x.bitwise_xor_(x >> 16)
    x.mul_(_signed32(_MIX_M[0])).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 15)
    x.mul_(_signed32(_MIX_M[1])).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 16)


@functools.lru_cache(maxsize=8)
def _tables(device: torch.device) -> tuple[torch.Tensor, ...]:
    """fp32 tables on `device`, built from Python floats (the same numbers on every device).

    ln: for the 2^8 mantissa intervals [1 + k/256, 1 + (k+1)/256) with centres c_k,
    R_k = 2^-23 / c_k and L_k = ln c_k (- ln 2 where c_k > 1.5, whose exponent is raised by one,
    so that ln u near u = 1 comes without cancellation). Angle: cos and sin of the 2^10 sector
    centres 2 pi (i + 1/2) / 2^10.
    """
    half = 2 ** (_LN_BITS - 1)
    centres = [1.0 + (k + 0.5) / 2 ** _LN_BITS for k in range(2 ** _LN_BITS)]
    r = [2.0 ** -23 / c for c in centres]
    ln = [math.log(c) - (_LN2 if k >= half else 0.0) for k, c in enumerate(centres)]
    angles = [2.0 * math.pi * (i + 0.5) / 2 ** _ANGLE_BITS for i in range(2 ** _ANGLE_BITS)]
    cols = (r, ln, [math.cos(a) for a in angles], [math.sin(a) for a in angles])
    return tuple(torch.tensor(c, dtype=torch.float32, device=device) for c in cols)


def _gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def _ln_uniform(h: torch.Tensor, tables) -> torch.Tensor:
    """ln u for u = (h + 1/2) 2^-32, h int64 in [0, 2^32) -> fp32.

    x = fp32(h) + 1/2 = m 2^(e - 127), read from its bits (m in [1, 2)). With k = m's top 8
    mantissa bits, m - c_k = (low 15 bits - 2^14) 2^-23 exactly, t = (m - c_k) / c_k (|t| < 2^-9)
    and ln u = (e + [k >= 128] - 159) ln 2 + L_k + t - t^2/2 + t^3/3 (cubic error < t^4/4 < 2e-11).
    """
    R, L = tables[0], tables[1]
    bits = h.to(torch.float32).add_(0.5).view(torch.int32)  # x > 0: the sign bit is clear
    k = (bits >> (23 - _LN_BITS)).bitwise_and_(2 ** _LN_BITS - 1)
    # adding 2^22 carries into the exponent exactly when m >= 1.5 (k >= 128)
    exponent = ((bits + (1 << 22)) >> 23).sub_(159).to(torch.float32)
    low = 23 - _LN_BITS
    t = (bits & (2 ** low - 1)).sub_(2 ** (low - 1)).to(torch.float32).mul_(_gather(R, k))
    poly = (t * (1.0 / 3.0)).sub_(0.5).mul_(t).add_(1.0).mul_(t)
    return exponent.mul_(_LN2).add_(_gather(L, k)).add_(poly)


def _cos_sin(h: torch.Tensor, tables) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos theta, sin theta) for theta = 2 pi (h + 1/2) 2^-32, h int64 in [0, 2^32) -> fp32.

    theta = a_i + d: sector centre a_i (i = top 10 bits, tabled) plus |d| < pi / 2^10, with
    cos d = 1 - d^2/2 and sin d = d (errors below d^3/6 < 5e-9).
    """
    C, S = tables[2], tables[3]
    low = 32 - _ANGLE_BITS
    i = h >> low
    # h's low bits minus the sector centre, exact in fp32 (< 2^23 with the half)
    d = (h & (2 ** low - 1)).to(torch.float32).sub_(2 ** (low - 1) - 0.5).mul_(2.0 * math.pi * 2.0 ** -32)
    c, s = _gather(C, i), _gather(S, i)
    half_d2 = (d * d).mul_(0.5)
    cos = (c * half_d2).add_(s * d)
    cos = torch.sub(c, cos, out=cos)
    sin = (c * d).sub_(s.mul(half_d2)).add_(s)
    return cos, sin


def _round_keys(keys_per_sample: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(k_hi (B, 1), round keys (R, B, 1)) of the samples' noise seeds, one small copy to `device`."""
    seeds = [key_seed("noise", k) for k in keys_per_sample]
    table = [[s >> 32 for s in seeds]]
    table += [[((s & _M32) + r * _PHILOX_W) & _M32 for s in seeds] for r in range(_PHILOX_ROUNDS)]
    t = torch.tensor(table, dtype=torch.int64, device=device)[..., None]
    return t[0], t[1:]


def token_noise(keys_per_sample: Sequence[Sequence[int]], token_ids: torch.Tensor, n_channels: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal noise z(keys, g, c) (module doc) of the given global token ids: (B, n, C).

    Computed in fp32 on `token_ids.device` (int64, values in [0, 2^32)), then cast to dtype.
    """
    if n_channels < 1 or n_channels > _MAX_CHANNELS:
        raise ValueError(f"n_channels must be in [1, {_MAX_CHANNELS}], got {n_channels}")
    if token_ids.dtype != torch.int64 or token_ids.dim() != 1:
        raise ValueError(f"token_ids must be a 1-D int64 tensor, got {token_ids.dtype} {tuple(token_ids.shape)}")
    dev, B, n, C = token_ids.device, len(keys_per_sample), token_ids.shape[0], n_channels
    out = torch.empty(B * n, C, dtype=torch.float32, device=dev)
    if B == 0 or n == 0:
        return out.reshape(B, n, C).to(dtype)
    k_hi, round_keys = _round_keys(keys_per_sample, dev)
    t0, t1 = philox2x32(token_ids[None, :], k_hi, round_keys)  # (B, n) each
    t0, t1 = t0.reshape(-1), t1.reshape(-1)
    c2, c_sin = (C + 1) // 2, C // 2  # channel pairs; pairs with a sine channel
    j = torch.arange(c2, dtype=torch.int64, device=dev)
    w0, w1 = (j * _WEYL[0]) & _M32, (j * _WEYL[1]) & _M32  # j < 2^16: products < 2^48
    tables = _tables(dev)
    rows = max(1, _CHUNK_PAIRS.get(dev.type, _CHUNK_PAIRS_DEFAULT) // c2)
    for s in range(0, B * n, rows):
        e = min(s + rows, B * n)
        q = _ln_uniform(_mix32_(t0[s:e, None] ^ w0), tables).mul_(-2.0).clamp_min_(2.0 ** -100)
        radius = q.mul_(torch.rsqrt(q))  # sqrt(-2 ln u); u = 1 gives ~0, never NaN
        cos, sin = _cos_sin(_mix32_(t1[s:e, None] ^ w1), tables)
        torch.mul(radius, cos, out=out[s:e, 0::2])
        if c_sin:
            torch.mul(radius[:, :c_sin], sin[:, :c_sin], out=out[s:e, 1::2])
    return out.reshape(B, n, C).to(dtype)


@functools.lru_cache(maxsize=64)
def _cached_ids(layout: WindowLayout, rank: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(layout.index_map(0, rank).reshape(-1)).to(device)


def rank_token_ids(layout: WindowLayout, rank: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Global token ids of rank `rank`'s tokens in frame 0, flat (n_lw * tpp,) int64 on `device`.

    Cached per (layout, rank, device): the hot path copies no ids. Read-only (shared).
    """
    if layout.H * layout.W > 1 << 32:
        raise ValueError(f"grid {layout.H}x{layout.W} has more than 2^32 tokens: noise counters are 32-bit")
    return _cached_ids(layout, rank, torch.device(device if device is not None else "cpu"))


def members_noise(layout: WindowLayout, rank: int, keys_per_member: Sequence[Sequence[int]],
                  n_channels: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Noise of rank `rank`'s tokens in frame 0 for a batch, one key tuple per entry: (B, n_lw, tpp, C).

    Entry b equals `window_noise(layout, rank, keys_per_member[b], ...)` and `field_noise` sliced
    with the rank's index map, for any (wy, wx, sp) and any window size.
    """
    ids = rank_token_ids(layout, rank, device)
    z = token_noise(keys_per_member, ids, n_channels, dtype)
    return z.reshape(len(keys_per_member), layout.n_local_windows, layout.tokens_per_piece, n_channels)


def window_noise(layout: WindowLayout, rank: int, keys: Sequence[int], n_channels: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Noise of rank `rank`'s tokens in frame 0 for one sample: (n_lw, tpp, C)."""
    return members_noise(layout, rank, [keys], n_channels, dtype, device)[0]


def field_noise(layout: WindowLayout, keys: Sequence[int], n_channels: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The whole field's noise (C, H, W) (serial reference; depends only on the grid)."""
    if layout.H * layout.W > 1 << 32:
        raise ValueError(f"grid {layout.H}x{layout.W} has more than 2^32 tokens: noise counters are 32-bit")
    ids = torch.arange(layout.H * layout.W, dtype=torch.int64, device=device)
    z = token_noise([keys], ids, n_channels, dtype)[0]
    return z.T.reshape(n_channels, layout.H, layout.W)


def sample_sigma(generator: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """n noise levels log-uniform on [lo, hi]: sigma = exp(U(log lo, log hi)), float64 (n,)."""
    if not 0 < lo <= hi:
        raise ValueError(f"sample_sigma needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def sample_sigmas(keys_per_sample: Sequence[Sequence[int]], lo: float, hi: float) -> torch.Tensor:
    """One sigma per sample, each from keyed_generator("sigma", keys): every rank of a sample agrees."""
    return torch.cat([sample_sigma(keyed_generator("sigma", k), 1, lo, hi) for k in keys_per_sample])
