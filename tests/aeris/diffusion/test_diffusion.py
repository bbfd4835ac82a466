"""TrigFlow objective, loss weights, layout-independent noise and the PF-ODE sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from aeris.config import load_config
from aeris.diffusion.config import DiffusionConfig
from aeris.diffusion.noise import members_noise, sample_sigma, sample_sigmas
from aeris.diffusion.sampler import n_function_evaluations, sample_members, sample_ode, sigma_schedule
from aeris.diffusion.trigflow import (loss_normaliser, sigma_to_t, t_to_sigma, trigflow_inputs, trigflow_loss,
                                      weighted_error_sum)
from aeris.diffusion.weights import latitude_weight_field, latitude_weights, token_weights, variable_weights
from swipe.layout import WindowLayout

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 2, 4), (1, 1, 4)]


# ---- noise levels (the noise itself: test_noise.py) -----------------------------------------
def test_sigma_is_log_uniform_and_keyed_per_sample():
    g = torch.Generator().manual_seed(0)
    s = sample_sigma(g, 4000, 0.2, 500.0)
    assert s.min() >= 0.2 and s.max() <= 500.0
    u = (torch.log(s) - math.log(0.2)) / (math.log(500.0) - math.log(0.2))
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    s1 = sample_sigmas([(0, 5, 0), (0, 5, 1)], 0.2, 500.0)
    s2 = sample_sigmas([(0, 5, 1)], 0.2, 500.0)  # sample 1 alone, e.g. on another rank
    assert s1[1] == s2[0] and s1[0] != s1[1]
    with pytest.raises(ValueError, match="lo"):
        sample_sigma(g, 1, 0.0, 1.0)


# ---- TrigFlow objective -----------------------------------------------------------------------
@pytest.mark.parametrize("sigma_d", [1.0, 0.5])
def test_trigflow_inputs_identities(sigma_d):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    xs, v = trigflow_inputs(x0, eps, t, sigma_d)
    torch.testing.assert_close(xs[0] * sigma_d, x0[0])  # t = 0: clean data
    # v is the time derivative of x_t (central difference)
    h = 1e-6
    xp, _ = trigflow_inputs(x0, eps, t + h, sigma_d)
    xm, _ = trigflow_inputs(x0, eps, t - h, sigma_d)
    torch.testing.assert_close((xp - xm) * sigma_d / (2 * h), v, rtol=1e-6, atol=1e-6)
    # x0 is recovered from (x_t, v): x0 = cos t x_t - sin t v
    c, s = torch.cos(t)[:, None, None, None], torch.sin(t)[:, None, None, None]
    torch.testing.assert_close(c * xs * sigma_d - s * v, x0)
    assert sigma_to_t(t_to_sigma(0.9, 2.0), 2.0) == pytest.approx(0.9)
    assert sigma_to_t(torch.tensor(1.0)).item() == pytest.approx(math.pi / 4)


def test_trigflow_loss_value_against_loop():
    g = torch.Generator().manual_seed(1)
    B, n, t_, C = 2, 3, 4, 3
    x0 = torch.randn(B, n, t_, C, generator=g, dtype=torch.float64)
    z = torch.randn(B, n, t_, C, generator=g, dtype=torch.float64)
    cond = torch.randn(B, n, t_, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, 1.2], dtype=torch.float64)
    wt = torch.rand(n, t_, generator=g, dtype=torch.float64)
    wc = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)

    def model(xs, cnd, tt):
        return torch.tanh(xs + cnd) * tt[:, None, None, None]

    loss = trigflow_loss(model, x0, cond, t, z, wt, wc, normaliser=B * n * t_)
    ref = 0.0
    for b in range(B):
        c, s = math.cos(t[b]), math.sin(t[b])
        for i in range(n):
            for j in range(t_):
                xs = c * x0[b, i, j] + s * z[b, i, j]
                Fv = torch.tanh(xs + cond[b, i, j]) * t[b]
                v = c * z[b, i, j] - s * x0[b, i, j]
                ref += float(wt[i, j] * (wc * (Fv - v) ** 2).sum())
    assert loss.item() == pytest.approx(ref / (B * n * t_), rel=1e-12)

    # the exact target gives zero loss
    def oracle(xs, cnd, tt):
        return trigflow_inputs(x0, z, tt)[1]

    assert trigflow_loss(oracle, x0, cond, t, z, wt, wc, 1.0).item() == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match="normaliser"):
        trigflow_loss(model, x0, cond, t, z, wt, wc, 0)
    with pytest.raises(ValueError, match="w_channel"):
        weighted_error_sum(x0, z, None, torch.ones(2))


@pytest.mark.parametrize("wpy,wpx,sp", LAYOUTS[1:])
def test_loss_sum_over_ranks_equals_serial_loss(wpy, wpx, sp):
    """docs/training.md, "Gradient normalisation": per-rank losses with the global normaliser sum to the serial mean."""
    H, W, ws, C, B = 8, 16, (4, 4), 3, 2
    lat = np.linspace(90, -90, H + 1)[:-1]
    wfield = latitude_weight_field(lat, W, 0.01)
    wc = torch.as_tensor(variable_weights(["t2m", "u10", "z500"]))
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(B, H, W, C, generator=g, dtype=torch.float64)
    cond = torch.randn(B, H, W, C, generator=g, dtype=torch.float64)
    t = torch.atan(sample_sigmas([(0, 9, b) for b in range(B)], 0.2, 500.0))

    def model(xs, cnd, tt):
        return torch.sin(2 * xs) - cnd * tt[:, None, None, None]

    def run(layout):
        total = 0.0
        for r in range(layout.n_ranks):
            ids = torch.from_numpy(layout.index_map(0, r))
            z = members_noise(layout, r, [(0, 9, b) for b in range(B)], C, torch.float64)
            wt = torch.as_tensor(token_weights(wfield, ids.numpy()))
            total = total + trigflow_loss(model, x0.reshape(B, H * W, C)[:, ids], cond.reshape(B, H * W, C)[:, ids],
                                          t, z, wt, wc, loss_normaliser(H * W, B))
        return total

    serial = run(WindowLayout(H, W, *ws))
    torch.testing.assert_close(run(WindowLayout(H, W, *ws, wpy, wpx, sp)), serial, rtol=1e-12, atol=0)


# ---- weights ----------------------------------------------------------------------------------
def test_latitude_weights():
    lat = np.linspace(90, -90, 65)[:-1]  # pole-inclusive grid minus the last row
    w = latitude_weights(lat)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w, np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean(), atol=1e-12)
    assert w[0] == pytest.approx(0.0, abs=1e-12)  # the north pole row has no weight ...
    we = latitude_weights(lat, epsilon=0.01)
    assert we[0] > 0 and we.mean() == pytest.approx(1.0)  # ... unless epsilon (orig 0.01)
    assert we[0] / we[32] == pytest.approx(0.01 / 1.01)
    f = latitude_weight_field(lat, 8, 0.01)
    assert f.shape == (64, 8) and f.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="latitudes"):
        latitude_weights([95.0])


def test_variable_weights_by_hand():
    ch = ["t2m", "u10", "v10", "msl", "z500", "z850", "t300", "t500", "t850"]
    w = variable_weights(ch)
    raw = np.array([1, 0.1, 0.1, 0.1, 500 / 1350, 850 / 1350, 300 / 1650, 500 / 1650, 850 / 1650])
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w.mean() == pytest.approx(1.0)
    # each level variable has the same total, proportional to pressure within
    assert w[4] + w[5] == pytest.approx(w[6] + w[7] + w[8])
    assert w[5] / w[4] == pytest.approx(850 / 500)
    with pytest.raises(ValueError, match="surface channel 'sst'"):
        variable_weights(["t2m", "sst"], surface_weights={"t2m": 1.0})


# ---- sampler ----------------------------------------------------------------------------------
def test_sigma_schedule():
    s = sigma_schedule(5, 0.2, 500.0, rho=10.0)
    assert s.shape == (6,) and s[0] == pytest.approx(500.0) and s[4] == pytest.approx(0.2) and s[5] == 0
    assert torch.all(s[:-1] > s[1:])
    a, b = 500.0 ** 0.1, 0.2 ** 0.1
    assert s[2] == pytest.approx((a + 0.5 * (b - a)) ** 10)
    assert sigma_schedule(1, 0.2, 80.0).tolist() == [80.0, 0.0]
    assert n_function_evaluations(20) == 39


MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
SD = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)


def gaussian_denoiser(sigma_d: float, calls: list):
    """Exact F for data x0 ~ N(MU, SD^2) per channel (last dim): F = E[v | x_t] / sigma_d,
    E[v | x_t] = -sin t MU + cos t sin t (sigma_d^2 - SD^2) / V (x_t - cos t MU),
    V = cos^2 t SD^2 + sin^2 t sigma_d^2."""
    def F(xs, t):
        calls.append(1)
        t = t.reshape(-1, *([1] * (xs.dim() - 1)))
        c, s = torch.cos(t), torch.sin(t)
        x = xs * sigma_d
        V = c ** 2 * SD ** 2 + s ** 2 * sigma_d ** 2
        ev = -s * MU + c * s * (sigma_d ** 2 - SD ** 2) / V * (x - c * MU)
        return ev / sigma_d
    return F


@pytest.mark.parametrize("sigma_d", [1.0, 0.7])
def test_ode_sampler_recovers_gaussian(sigma_d):
    g = torch.Generator().manual_seed(0)
    n, steps = 4000, 20
    z = torch.randn(n, 1, 1, 3, generator=g, dtype=torch.float64)
    calls: list = []
    x = sample_ode(gaussian_denoiser(sigma_d, calls), z, sigma_schedule(steps, 0.02, 500.0), sigma_d)
    assert len(calls) == n_function_evaluations(steps)
    # the exact flow of a Gaussian is the affine map z -> MU + SD z (up to the tiny x0 part at t_0):
    # x_t = m_t + sqrt(V_t) u with u constant along the PF-ODE
    err = (x - (MU + SD * z)).abs().amax(dim=(0, 1, 2)) / SD
    assert torch.all(err < 0.15), err
    m, s = x.reshape(n, 3).mean(0), x.reshape(n, 3).std(0)
    assert torch.all((m - MU).abs() < 4 * SD / math.sqrt(n))
    assert torch.all((s / SD - 1).abs() < 0.05)


def test_heun_in_trigflow_time_beats_heun_in_sigma():
    """Evidence for the default ode_space='t' with sigma_max 500, rho 10, and convergence in N."""
    z = torch.randn(500, 1, 1, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def err(steps, space):
        x = sample_ode(gaussian_denoiser(1.0, []), z, sigma_schedule(steps, 0.02, 500.0), space=space)
        return float(((x - (MU + SD * z)).abs() / SD).max())

    assert err(20, "t") < 0.5 * err(20, "sigma")
    assert err(40, "t") < 0.4 * err(20, "t")  # second order: error falls fast with N
    assert err(40, "sigma") < 0.4 * err(20, "sigma")


def test_churn_sampler_still_recovers_gaussian():
    g = torch.Generator().manual_seed(1)
    n, steps = 4000, 32  # churn adds discretisation bias that vanishes with N (checked to N = 64)
    z = torch.randn(n, 1, 1, 3, generator=g, dtype=torch.float64)
    extra = torch.randn(steps, n, 1, 1, 3, generator=g, dtype=torch.float64)
    calls: list = []
    x = sample_ode(gaussian_denoiser(1.0, calls), z, sigma_schedule(steps, 0.02, 500.0), 1.0,
                   churn=8.0, churn_sigma_min=0.05, churn_sigma_max=50.0, step_noise=lambda i: extra[i])
    assert not torch.allclose(x, MU + SD * z, atol=1e-2)  # churn did inject noise
    m, s = x.reshape(n, 3).mean(0), x.reshape(n, 3).std(0)
    assert torch.all((m - MU).abs() < (4 / math.sqrt(n) + 0.02) * SD)
    assert torch.all((s / SD - 1).abs() < 0.06)
    with pytest.raises(ValueError, match="step_noise"):
        sample_ode(gaussian_denoiser(1.0, []), z, sigma_schedule(3, 0.1, 10.0), churn=1.0)


@pytest.mark.parametrize("churn", [0.0, 4.0])
def test_members_are_layout_independent_and_reproducible_alone(churn):
    H, W, ws = 8, 8, (4, 4)
    cfg = DiffusionConfig(steps=4, sample_sigma_min=0.05, sample_sigma_max=80.0, churn=churn)
    keys = [(11, 202008210, m) for m in range(3)]
    den = gaussian_denoiser(1.0, [])
    serial = WindowLayout(H, W, *ws)
    full = sample_members(den, serial, 0, keys, 3, cfg, torch.float64)          # (3, n_lw, tpp, C)
    field = np.moveaxis(serial.assemble([np.moveaxis(full.numpy(), -1, 1)], 0), 1, -1)  # (B, H, W, C)
    par = WindowLayout(H, W, *ws, 2, 1, 2)
    for r in range(par.n_ranks):
        piece = sample_members(den, par, r, keys, 3, cfg, torch.float64)
        ids = par.index_map(0, r)
        np.testing.assert_allclose(piece.numpy(), field.reshape(3, H * W, 3)[:, ids], rtol=1e-12, atol=1e-12)
    alone = sample_members(den, serial, 0, keys[2:], 3, cfg, torch.float64)
    torch.testing.assert_close(alone[0], full[2])
    assert not torch.allclose(full[0], full[1])


def test_configs_load_and_validate():
    for name in ("tiny", "aeris-1.3b-6h", "aeris-1.3b-24h", "aeris-40b-bench"):
        cfg = load_config(name)
        assert cfg.diffusion.sigma_data == 1.0 and cfg.diffusion.rho == 10.0
    assert load_config("aeris-40b-bench").diffusion.sigma_min == 0.02
    with pytest.raises(ValueError, match="sigma_min"):
        DiffusionConfig(sigma_min=1.0, sigma_max=0.5)
