"""Hard Concrete gates: sampling against the closed forms, gradients, evaluation, settings."""

import io
import math

import pytest
import torch

from flexhinm import HardConcrete

LOG_ALPHAS = [-3.0, -1.0, 0.0, 0.7, 2.5]
SAMPLES = 100_000


def make_gates(temperature=2.0 / 3.0, dtype=torch.float64):
    return HardConcrete(len(LOG_ALPHAS), init_log_alpha=torch.tensor(LOG_ALPHAS, dtype=dtype), dtype=dtype,
                        temperature=temperature)


def draw(gates, seed=0, clip=True):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return gates.sample((SAMPLES,), generator=generator, clip=clip)


@pytest.mark.parametrize("temperature", [2.0 / 3.0, 0.2])
def test_sample_mean_matches_quadrature(temperature):
    """The Monte Carlo mean of 1e5 gates is within 0.006 (about 4 standard errors) of E[z]."""
    gates = make_gates(temperature)
    measured = draw(gates).mean(dim=0)
    expected = gates.mean().detach()
    for index, log_alpha in enumerate(LOG_ALPHAS):
        error = abs(float(measured[index] - expected[index]))
        assert error < 0.006, (f"log_alpha={log_alpha}: sample mean {float(measured[index]):.4f} "
                               f"vs E[z] {float(expected[index]):.4f}")


@pytest.mark.parametrize("temperature", [2.0 / 3.0, 0.2])
def test_sample_zero_one_frequencies(temperature):
    """Frequencies of z == 0, z == 1 and z != 0 in 1e5 draws are within 0.006 of the closed forms."""
    gates = make_gates(temperature).requires_grad_(False)
    samples = draw(gates, seed=1)
    cases = {
        "P(z=0)": ((samples == 0).double().mean(dim=0), gates.prob_zero()),
        "P(z=1)": ((samples == 1).double().mean(dim=0), gates.prob_one()),
        "P(z!=0)": ((samples != 0).double().mean(dim=0), gates.prob_nonzero()),
    }
    for label, (measured, expected) in cases.items():
        for index, log_alpha in enumerate(LOG_ALPHAS):
            error = abs(float(measured[index] - expected[index]))
            assert error < 0.006, (f"{label} at log_alpha={log_alpha}: measured "
                                   f"{float(measured[index]):.4f}, closed form "
                                   f"{float(expected[index]):.4f}")


def test_cdf_matches_empirical_distribution():
    """The empirical CDF of 1e5 unclipped samples is within 0.006 of cdf() (KS distance)."""
    gates = make_gates()
    samples = draw(gates, seed=2, clip=False)
    grid = torch.linspace(-0.1, 1.1, 121, dtype=torch.float64)
    empirical = (samples[:, :, None] <= grid).double().mean(dim=0)
    analytic = gates.cdf(grid[None, :].expand(len(LOG_ALPHAS), -1).T).T.detach()
    distance = float((empirical - analytic).abs().max())
    assert distance < 0.006, f"Kolmogorov-Smirnov distance {distance:.4f}"


def test_unclipped_samples_stay_in_stretch_interval():
    """Unclipped samples lie in (gamma, zeta), and clipped ones in [0, 1]."""
    gates = make_gates()
    stretched = draw(gates, seed=3, clip=False)
    clipped = draw(gates, seed=3)
    assert bool((stretched > -0.1).all())
    assert bool((stretched < 1.1).all())
    assert bool((clipped >= 0).all())
    assert bool((clipped <= 1).all())
    assert torch.equal(clipped, stretched.clamp(0, 1))


def test_density_is_derivative_of_cdf():
    """A central difference of cdf() equals density() to 1e-6 in float64."""
    gates = make_gates()
    x = torch.linspace(-0.09, 1.09, 237, dtype=torch.float64)[:, None]
    step = 1e-6
    with torch.no_grad():
        numeric = (gates.cdf(x + step) - gates.cdf(x - step)) / (2 * step)
        analytic = gates.density(x)
    error = float((numeric - analytic).abs().max())
    assert error < 1e-6, f"largest difference {error:.3g}"


def test_density_integrates_to_cdf():
    """The integral of density() over [a, b] equals cdf(b) - cdf(a) within 1e-6 (trapezoid, 2e5 points).

    The interval stops 0.001 short of gamma and zeta, where the density has an integrable
    singularity like (x - gamma) ** (beta - 1) that the trapezoid rule cannot resolve.
    """
    gates = make_gates()
    low, high = -0.099, 1.099
    x = torch.linspace(low, high, 200_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        integral = torch.trapezoid(gates.density(x), x, dim=0)
        expected = gates.cdf(high) - gates.cdf(low)
    for index, log_alpha in enumerate(LOG_ALPHAS):
        error = abs(float(integral[index] - expected[index]))
        assert error < 1e-6, f"log_alpha={log_alpha}: integral {float(integral[index]):.8f}, " \
                             f"cdf difference {float(expected[index]):.8f}"


def test_cdf_limits():
    """cdf() tends to 0 at gamma and 1 at zeta."""
    gates = make_gates()
    with torch.no_grad():
        near_low = gates.cdf(-0.1 + 1e-12)
        near_high = gates.cdf(1.1 - 1e-12)
    assert float(near_low.max()) < 1e-6, near_low.tolist()
    assert float(near_high.min()) > 1 - 1e-6, near_high.tolist()


def test_density_hand_value():
    """At log_alpha = 0 and x = 0.5: f = beta * 1.2 / 0.36 / 4 = 5/9."""
    gates = HardConcrete((), dtype=torch.float64).requires_grad_(False)
    assert math.isclose(float(gates.density(0.5)), 5.0 / 9.0, rel_tol=1e-12)
    assert float(gates.density(-0.2)) == 0.0
    assert float(gates.density(1.1)) == 0.0


def test_closed_forms_hand_values():
    """At log_alpha = 0, P(z != 0) equals sigmoid(2/3 * log 11) and E[z] is 0.5 by symmetry."""
    gates = HardConcrete((), dtype=torch.float64).requires_grad_(False)
    expected = 1.0 / (1.0 + math.exp(-(2.0 / 3.0) * math.log(11.0)))
    assert math.isclose(float(gates.prob_nonzero()), expected, rel_tol=1e-12)
    assert math.isclose(float(gates.prob_zero()), 1.0 - expected, rel_tol=1e-12)
    assert math.isclose(float(gates.prob_one()), 1.0 - expected, rel_tol=1e-12)
    assert math.isclose(float(gates.mean()), 0.5, abs_tol=1e-12)


def test_closed_forms_agree_with_cdf():
    """P(z = 0) = F(0) and P(z = 1) = 1 - F(1)."""
    gates = make_gates().requires_grad_(False)
    with torch.no_grad():
        assert torch.allclose(gates.prob_zero(), gates.cdf(0.0), rtol=0, atol=1e-14)
        assert torch.allclose(gates.prob_one(), 1 - gates.cdf(1.0), rtol=0, atol=1e-14)
    assert float(gates.cdf(-0.2)[0]) == 0.0
    assert float(gates.cdf(1.2)[0]) == 1.0


def test_mean_matches_fine_trapezoid():
    """mean() equals a 2e5-point trapezoid integral of 1 - F over [0, 1] within 1e-9."""
    gates = make_gates(temperature=0.1)
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        reference = torch.trapezoid(1 - gates.cdf(x), x, dim=0)
        error = float((gates.mean() - reference).abs().max())
    assert error < 1e-9, f"largest difference {error:.3g}"


def test_gradient_reaches_log_alpha():
    """Samples, deterministic gates and closed forms all give finite, non-zero log_alpha gradients."""
    torch.manual_seed(0)
    gates = make_gates(dtype=torch.float32)
    for label, value in (("sample", lambda: gates.sample((64,)).mean()),
                         ("deterministic", lambda: gates.deterministic_gate().sum()),
                         ("prob_nonzero", lambda: gates.prob_nonzero().sum()),
                         ("mean", lambda: gates.mean().sum())):
        gates.log_alpha.grad = None
        value().backward()
        grad = gates.log_alpha.grad
        assert grad is not None, label
        assert bool(torch.isfinite(grad).all()), label
        assert bool((grad[1:4] != 0).all()), f"{label}: {grad.tolist()}"


def test_eval_is_deterministic_closed_form():
    """In eval mode two calls are equal and equal clip(sigmoid(log_alpha) * 1.2 - 0.1, 0, 1)."""
    gates = make_gates().eval()
    first, second = gates(), gates()
    expected = (torch.sigmoid(torch.tensor(LOG_ALPHAS, dtype=torch.float64)) * 1.2 - 0.1).clamp(0, 1)
    assert torch.equal(first, second)
    assert torch.allclose(first, expected, rtol=0, atol=1e-12)


def test_train_mode_samples():
    """In training mode two calls differ and use the global generator."""
    gates = make_gates()
    torch.manual_seed(5)
    first = gates()
    torch.manual_seed(5)
    again = gates()
    assert not torch.equal(first, gates())
    assert torch.equal(first, again)


def test_generator_reproducible():
    """Equal seeds give equal samples; the generator attribute is used when none is passed."""
    gates = make_gates()
    first = gates.sample((8,), generator=torch.Generator().manual_seed(7))
    second = gates.sample((8,), generator=torch.Generator().manual_seed(7))
    other = gates.sample((8,), generator=torch.Generator().manual_seed(8))
    gates.generator = torch.Generator().manual_seed(7)
    attribute = gates.sample((8,))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(first, attribute)


def test_temperature_annealing_sharpens():
    """A lower temperature leaves fewer samples strictly inside (0, 1)."""
    gates = make_gates()
    warm = draw(gates, seed=4)
    gates.temperature = 0.1
    cold = draw(gates, seed=4)
    assert gates.temperature == 0.1
    inside_warm = float(((warm > 0) & (warm < 1)).double().mean())
    inside_cold = float(((cold > 0) & (cold < 1)).double().mean())
    assert inside_cold < inside_warm / 3, f"inside: {inside_cold:.3f} at 0.1, {inside_warm:.3f} at 2/3"


def test_state_dict_roundtrip_weights_only():
    """state_dict saves log_alpha and the settings and loads with weights_only=True."""
    gates = make_gates()
    gates.temperature = 0.25
    buffer = io.BytesIO()
    torch.save(gates.state_dict(), buffer)
    buffer.seek(0)
    restored = HardConcrete(len(LOG_ALPHAS), dtype=torch.float64)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.log_alpha, gates.log_alpha)
    assert restored.temperature == 0.25
    assert (restored.gamma, restored.zeta) == (-0.1, 1.1)


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_temperature(temperature):
    """A non-positive or non-finite temperature raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"temperature=.* is invalid"):
        HardConcrete(3, temperature=temperature)


def test_bad_temperature_setter():
    """Setting a non-positive temperature raises and keeps the old value."""
    gates = HardConcrete(3)
    with pytest.raises(ValueError, match=r"temperature=0.0 is invalid"):
        gates.temperature = 0.0
    with pytest.raises(TypeError, match="temperature must be a number"):
        gates.temperature = "warm"
    assert gates.temperature == 2.0 / 3.0


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_bad_gamma(gamma):
    """gamma >= 0 raises ValueError naming it."""
    with pytest.raises(ValueError, match=rf"gamma={gamma} is invalid; the lower stretch limit"):
        HardConcrete(3, gamma=gamma)


@pytest.mark.parametrize("zeta", [1.0, 0.9])
def test_bad_zeta(zeta):
    """zeta <= 1 raises ValueError naming it."""
    with pytest.raises(ValueError, match=rf"zeta={zeta} is invalid; the upper stretch limit"):
        HardConcrete(3, zeta=zeta)


def test_bad_limits_not_finite():
    """Infinite stretch limits raise."""
    with pytest.raises(ValueError, match="gamma=-inf is invalid; the stretch limits must be finite"):
        HardConcrete(3, gamma=float("-inf"))


def test_bad_limits_type():
    """A stretch limit that is not a number raises TypeError."""
    with pytest.raises(TypeError, match="zeta must be a number"):
        HardConcrete(3, zeta="1.1")


def test_bad_eps():
    """eps outside (0, 0.5) raises."""
    with pytest.raises(ValueError, match=r"eps=0.0 is invalid"):
        HardConcrete(3, eps=0.0)


def test_bad_init_shape():
    """An initial tensor that does not broadcast to the shape raises."""
    with pytest.raises(ValueError, match=r"does not broadcast to the gate shape \(3,\)"):
        HardConcrete(3, init_log_alpha=torch.zeros(2))


def test_bad_init_not_finite():
    """A NaN initial logit raises."""
    with pytest.raises(ValueError, match="init_log_alpha contains 1 NaN"):
        HardConcrete(2, init_log_alpha=torch.tensor([0.0, float("nan")]))
