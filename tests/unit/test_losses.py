"""Unit tests for kdbench.losses against an independent float64 numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdbench.errors import ConfigError
from kdbench.losses import (
    LOSS_NAMES,
    POCL_RELEASED_T2,
    get_loss,
    mix_with_ce,
    per_token_divergence,
    token_ce,
)

# ---------------------------------------------------------------- float64 reference
# Naive textbook formulas on probabilities (no log-space tricks), so that an error in
# the log-space implementation cannot be mirrored here.


def _softmax64(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _entropy64(z):
    p = _softmax64(z)
    return -(p * np.log(p)).sum(-1)


def ref_per_token(name, zs, zt, T=1.0, alpha=0.1, beta=0.1, t=None):
    zs = np.asarray(zs, dtype=np.float64)
    zt = np.asarray(zt, dtype=np.float64)
    if name == "taid":
        p_t = _softmax64((1 - t) * zs + t * zt)
        return -(p_t * np.log(_softmax64(zs))).sum(-1)
    p, q = _softmax64(zt / T), _softmax64(zs / T)
    if name == "fkl":
        return -(p * np.log(q)).sum(-1)
    if name == "rkl":
        return (q * np.log(q / p)).sum(-1)
    if name == "jsd":
        m = beta * p + (1 - beta) * q
        return (1 - beta) * (q * np.log(q / m)).sum(-1) + beta * (p * np.log(p / m)).sum(-1)
    if name == "tvd":
        return 0.5 * np.abs(p - q).sum(-1)
    if name == "sfkl":
        return -(p * np.log(alpha * p + (1 - alpha) * q)).sum(-1)
    if name == "srkl":
        return (q * np.log(q / ((1 - alpha) * p + alpha * q))).sum(-1)
    raise AssertionError(name)


def ref_loss(name, zs, zt, mask, **kw):
    per_token = ref_per_token(name, zs, zt, **kw)
    mask = np.asarray(mask, dtype=bool)
    return per_token[mask].sum() / max(mask.sum(), 1)


def _logits(seed, shape=(2, 3, 7), scale=3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _params(name):
    return {"t": 0.4} if name == "taid" else {}


ALL = LOSS_NAMES + ("taid",)
TRUE_DIVERGENCES = ("rkl", "jsd", "tvd", "srkl")
CE_FORM = ("fkl", "sfkl")

# ------------------------------------------------------------------- API and names


def test_public_names():
    assert LOSS_NAMES == ("fkl", "rkl", "jsd", "tvd", "sfkl", "srkl")
    # docs/protocol.md section 1.3: which tem_* losses of pocl/losses.py multiply by T^2.
    assert POCL_RELEASED_T2 == {"fkl": True, "rkl": False, "jsd": True, "tvd": False,
                                "sfkl": False, "srkl": True}


def test_unknown_loss_names_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        get_loss("kld")
    message = str(err.value)
    assert "'kld'" in message
    for name in ALL:
        assert name in message
    with pytest.raises(ConfigError):
        per_token_divergence("tkl", _logits(0), _logits(1))


def test_shape_and_parameter_validation():
    zs, zt = _logits(0), _logits(1)
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError):
        get_loss("fkl")(zs, zt[..., :5], mask)
    with pytest.raises(ValueError):
        get_loss("fkl")(zs, zt, torch.ones(2, 4))
    with pytest.raises(ValueError):
        get_loss("fkl")(zs, zt, mask, temperature=0.0)
    with pytest.raises(ValueError):
        get_loss("sfkl")(zs, zt, mask, skew_alpha=1.5)
    with pytest.raises(ValueError):
        get_loss("jsd")(zs, zt, mask, jsd_beta=-0.1)


# ------------------------------------------------------- reference agreement (float64)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("T", [0.5, 1.0, 1.67, 2.0])
@pytest.mark.parametrize("alpha,beta", [(0.1, 0.1), (0.3, 0.5), (0.0, 1.0)])
def test_matches_float64_reference(name, T, alpha, beta):
    seed = 100 * LOSS_NAMES.index(name) + int(10 * T) + int(10 * alpha)
    zs, zt = _logits(seed), _logits(seed + 1)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    got = get_loss(name)(zs, zt, mask, temperature=T, skew_alpha=alpha, jsd_beta=beta)
    want = ref_loss(name, zs.numpy(), zt.numpy(), mask.numpy(), T=T, alpha=alpha, beta=beta)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-6)

    per_token = per_token_divergence(name, zs, zt, temperature=T, skew_alpha=alpha,
                                     jsd_beta=beta)
    assert per_token.shape == (2, 3)
    np.testing.assert_allclose(
        per_token.numpy(),
        ref_per_token(name, zs.numpy(), zt.numpy(), T=T, alpha=alpha, beta=beta),
        rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.2, 0.4, 0.9, 1.0])
def test_taid_matches_float64_reference(t):
    zs, zt = _logits(11), _logits(12)
    mask = torch.tensor([[1, 0, 1], [1, 1, 1]])
    got = get_loss("taid")(zs, zt, mask, t=t)
    want = ref_loss("taid", zs.numpy(), zt.numpy(), mask.numpy(), t=t)
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-6)


# Golden figures: computed once with ref_per_token above in float64, following
# jongwooko/distillm distillm/losses.py (forward_kl, reverse_kl, js_distance lam=0.9,
# tv_distance, skewed_forward_kl / skewed_reverse_kl lam=0.1), the T = 2 rows following
# the temperature placement of POCL pocl/losses.py tem_* (both logits / T, no T^2
# here), and TAID src/distil_losses/taid.py compute_loss for t = 0.5.
GOLDEN_STUDENT = [[[1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.0, -2.0]]]
GOLDEN_TEACHER = [[[2.0, -1.0, 0.0, 1.0], [0.0, 1.5, -0.5, -1.0]]]
GOLDEN = {
    ("fkl", 1.0): 1.2940541220949378,
    ("rkl", 1.0): 0.3672061050684051,
    ("jsd", 1.0): 0.03176328116882368,
    ("tvd", 1.0): 0.405404369332921,
    ("sfkl", 1.0): 1.221149231489619,
    ("srkl", 1.0): 0.28841172806236537,
    ("fkl", 2.0): 1.3496474109481933,
    ("rkl", 2.0): 0.09606669967935717,
    ("jsd", 2.0): 0.008601073081392394,
    ("tvd", 2.0): 0.21506779189706587,
    ("sfkl", 2.0): 1.3310089994165264,
    ("srkl", 2.0): 0.07731462930742741,
}
GOLDEN_TAID_T05 = 1.1784533460638427


@pytest.mark.parametrize("name,T", sorted(GOLDEN))
def test_golden_values(name, T):
    zs, zt = torch.tensor(GOLDEN_STUDENT), torch.tensor(GOLDEN_TEACHER)
    got = get_loss(name)(zs, zt, torch.ones(1, 2, dtype=torch.bool), temperature=T)
    assert got.item() == pytest.approx(GOLDEN[(name, T)], rel=1e-6, abs=1e-7)


def test_golden_taid():
    zs, zt = torch.tensor(GOLDEN_STUDENT), torch.tensor(GOLDEN_TEACHER)
    got = get_loss("taid")(zs, zt, torch.ones(1, 2), t=0.5)
    assert got.item() == pytest.approx(GOLDEN_TAID_T05, rel=1e-6)


# ------------------------------------------------------------ identities and bounds


@pytest.mark.parametrize("name", TRUE_DIVERGENCES)
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_zero_when_student_equals_teacher(name, T):
    z = _logits(3)
    got = get_loss(name)(z.clone(), z.clone(), torch.ones(2, 3), temperature=T)
    assert abs(got.item()) < 1e-6


@pytest.mark.parametrize("name", CE_FORM)
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_ce_form_equals_teacher_entropy_at_equality(name, T):
    z = _logits(4)
    per_token = per_token_divergence(name, z.clone(), z.clone(), temperature=T, skew_alpha=0.3)
    np.testing.assert_allclose(per_token.numpy(), _entropy64(z.numpy() / T), rtol=1e-6)


@pytest.mark.parametrize("seed", range(25))
def test_divergence_bounds_on_random_logits(seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 12))
    scale = float(rng.choice([0.1, 1.0, 5.0, 20.0]))
    T = float(rng.choice([0.7, 1.0, 2.0]))
    zs, zt = _logits(seed, (1, 4, vocab), scale), _logits(seed + 100, (1, 4, vocab), scale)
    kw = dict(temperature=T, skew_alpha=float(rng.uniform(0, 1)), jsd_beta=float(rng.uniform(0, 1)))
    entropy = torch.from_numpy(_entropy64(zt.numpy() / T)).float()
    tol = 1e-5
    # fkl and sfkl exceed H(p) by KL(p||q) and KL(p||a p + (1-a) q), both >= 0.
    assert (per_token_divergence("fkl", zs, zt, **kw) - entropy >= -tol).all()
    assert (per_token_divergence("sfkl", zs, zt, **kw) - entropy >= -tol).all()
    for name in ("rkl", "jsd", "srkl"):
        assert (per_token_divergence(name, zs, zt, **kw) >= -tol).all(), name
    tvd = per_token_divergence("tvd", zs, zt, **kw)
    assert ((tvd >= 0) & (tvd <= 1 + tol)).all()
    # The skewed losses are bounded by the unskewed ones (mixture is closer to q / p).
    assert (per_token_divergence("srkl", zs, zt, **kw)
            <= per_token_divergence("rkl", zs, zt, **kw) + tol).all()


def test_fkl_is_above_teacher_entropy_on_a_fixed_case():
    zs, zt = torch.tensor(GOLDEN_STUDENT), torch.tensor(GOLDEN_TEACHER)
    gap = per_token_divergence("fkl", zs, zt) - torch.from_numpy(_entropy64(GOLDEN_TEACHER)).float()
    assert (gap > 0.05).all()


# ------------------------------------------------------------------------- masking


@pytest.mark.parametrize("name", ALL)
def test_masked_positions_do_not_change_the_value(name):
    zs, zt = _logits(5), _logits(6)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    fn = get_loss(name)
    before = fn(zs, zt, mask, **_params(name))
    zs2, zt2 = zs.clone(), zt.clone()
    zs2[~mask] = 1e4 * torch.randn_like(zs2[~mask])
    zt2[~mask] = -3e3
    after = fn(zs2, zt2, mask, **_params(name))
    assert torch.equal(before, after)
    # Only masked tokens count, each with equal weight (flattened over the batch).
    per_token = per_token_divergence(name, zs, zt, **_params(name))
    assert before.item() == pytest.approx(per_token[mask].mean().item(), rel=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_garbage_at_masked_positions_does_not_leak(name):
    # Beyond the contract (finite values), but padding rows can come out of a model as nan.
    zs, zt = _logits(40), _logits(41)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    fn = get_loss(name)
    zs2 = zs.clone()
    zs2[0, 2] = math.nan
    assert torch.equal(fn(zs2, zt, mask, **_params(name)), fn(zs, zt, mask, **_params(name)))


@pytest.mark.parametrize("name", ALL)
def test_empty_mask_gives_zero_with_a_graph(name):
    zs = _logits(7).requires_grad_()
    loss = get_loss(name)(zs, _logits(8), torch.zeros(2, 3, dtype=torch.bool), **_params(name))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(zs.grad, torch.zeros_like(zs))


def test_mask_accepts_bool_and_integer_and_float():
    zs, zt = _logits(9), _logits(10)
    bool_mask = torch.tensor([[True, True, False], [True, False, False]])
    values = {get_loss("rkl")(zs, zt, m).item()
              for m in (bool_mask, bool_mask.long(), bool_mask.float())}
    assert len(values) == 1


# ---------------------------------------------------------------------- temperature


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("T", [0.5, 1.33, 2.0])
def test_temperature_divides_both_logits(name, T):
    zs, zt = _logits(13, dtype=torch.float64), _logits(14, dtype=torch.float64)
    mask = torch.ones(2, 3)
    fn = get_loss(name)
    at_t = fn(zs, zt, mask, temperature=T)
    pre_divided = fn(zs / T, zt / T, mask, temperature=1.0)
    assert at_t.item() == pytest.approx(pre_divided.item(), rel=1e-6)
    assert at_t.item() != pytest.approx(fn(zs, zt, mask).item(), rel=1e-3)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("T", [1.0, 1.33, 1.67, 2.0])
def test_t2_option_multiplies_by_t_squared(name, T):
    zs, zt = _logits(15), _logits(16)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    fn = get_loss(name)
    plain = fn(zs, zt, mask, temperature=T)
    scaled = fn(zs, zt, mask, temperature=T, scale_by_t2=True)
    assert torch.equal(scaled, plain * (T * T))
    assert plain.item() != 0.0
    per_token = per_token_divergence(name, zs, zt, temperature=T, scale_by_t2=True)
    torch.testing.assert_close(
        per_token, per_token_divergence(name, zs, zt, temperature=T) * (T * T))


def test_pocl_t2_table_reproduces_the_released_scaling():
    zs, zt = _logits(17), _logits(18)
    mask = torch.ones(2, 3)
    T = 2.0
    for name, scaled in POCL_RELEASED_T2.items():
        got = get_loss(name)(zs, zt, mask, temperature=T, scale_by_t2=scaled)
        want = ref_loss(name, zs.numpy(), zt.numpy(), mask.numpy(), T=T) * (T * T if scaled else 1)
        assert got.item() == pytest.approx(want, rel=1e-6), name


# ------------------------------------------------------------- numerics and gradients

EXTREMES = {
    "huge": lambda: (torch.tensor([[[1e4, -1e4, 0.0, 5e3, -5e3]]]),
                     torch.tensor([[[-1e4, 1e4, 3.0, -5e3, 1e4]]])),
    "gap": lambda: (torch.tensor([[[80.0, -80.0, 0.0, 0.0, -200.0]]]),
                    torch.tensor([[[-200.0, 0.0, 90.0, 0.0, 0.0]]])),
    "neg_inf": lambda: (torch.tensor([[[2.0, -math.inf, 0.5, -1.0, -math.inf]]]),
                        torch.tensor([[[0.0, -math.inf, 1.0, 3.0, -math.inf]]])),
    "neg_inf_and_huge": lambda: (torch.tensor([[[1e4, -math.inf, -1e4, 0.0, 1.0]]]),
                                 torch.tensor([[[-1e4, -math.inf, 1e4, 2.0, 0.0]]])),
}


@pytest.mark.parametrize("name,T", [(n, T) for n in LOSS_NAMES for T in (1.0, 2.0)]
                         + [("taid", 1.0)])
@pytest.mark.parametrize("case", sorted(EXTREMES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_finite_values_and_gradients_on_extreme_logits(name, T, case, dtype):
    zs, zt = EXTREMES[case]()
    zs = zs.to(dtype).requires_grad_()
    zt = zt.to(dtype)
    params = _params(name) if name == "taid" else {"temperature": T}
    loss = get_loss(name)(zs, zt, torch.ones(1, 1), **params)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert loss.item() >= -1e-4 or name in CE_FORM or name == "taid"
    loss.backward()
    assert torch.isfinite(zs.grad.float()).all()
    assert zs.grad.dtype == dtype


def test_neg_inf_entries_match_the_reference_without_them():
    # A banned token (-inf in both models) is as if that entry were not in the vocabulary.
    zs, zt = EXTREMES["neg_inf"]()
    keep = torch.isfinite(zs[0, 0])
    for name in LOSS_NAMES:
        got = get_loss(name)(zs, zt, torch.ones(1, 1), temperature=1.5)
        want = ref_loss(name, zs[..., keep].numpy(), zt[..., keep].numpy(), [[1]], T=1.5)
        assert got.item() == pytest.approx(want, rel=1e-6), name
    got = get_loss("taid")(zs, zt, torch.ones(1, 1), t=0.3)
    want = ref_loss("taid", zs[..., keep].numpy(), zt[..., keep].numpy(), [[1]], t=0.3)
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_neg_inf_entries_get_zero_gradient(name):
    zs, zt = EXTREMES["neg_inf"]()
    zs.requires_grad_()
    get_loss(name)(zs, zt, torch.ones(1, 1), **_params(name)).backward()
    assert torch.equal(zs.grad[torch.isinf(zs.detach())], torch.zeros(2))
    assert zs.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_bf16_inputs_are_computed_in_float32(name):
    zs, zt = _logits(19).bfloat16(), _logits(20).bfloat16()
    mask = torch.ones(2, 3)
    got = get_loss(name)(zs, zt, mask, **_params(name))
    want = get_loss(name)(zs.float(), zt.float(), mask, **_params(name))
    assert got.dtype == torch.float32
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ALL)
def test_gradient_reaches_only_the_student(name):
    zs = _logits(21).requires_grad_()
    zt = _logits(22).requires_grad_()
    loss = get_loss(name)(zs, zt, torch.ones(2, 3), **_params(name))
    loss.backward()
    assert zt.grad is None
    assert zs.grad is not None and zs.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradient_matches_float64_finite_differences(name):
    zs = _logits(23, (1, 2, 5), 2.0, torch.float64).requires_grad_()
    zt = _logits(24, (1, 2, 5), 2.0, torch.float64)
    mask = torch.tensor([[1, 1]])

    def f(x):
        # Reference loss as a differentiable float64 function (naive formulas, torch ops).
        T, a, b = 1.5, 0.1, 0.1
        p, q = torch.softmax(zt / T, -1), torch.softmax(x / T, -1)
        forms = {
            "fkl": -(p * q.log()).sum(-1),
            "rkl": (q * (q / p).log()).sum(-1),
            "jsd": (1 - b) * (q * (q / (b * p + (1 - b) * q)).log()).sum(-1)
                   + b * (p * (p / (b * p + (1 - b) * q)).log()).sum(-1),
            "tvd": 0.5 * (p - q).abs().sum(-1),
            "sfkl": -(p * (a * p + (1 - a) * q).log()).sum(-1),
            "srkl": (q * (q / ((1 - a) * p + a * q)).log()).sum(-1),
        }
        return forms[name].mean()

    (want,) = torch.autograd.grad(f(zs), zs)
    loss = get_loss(name)(zs, zt, mask, temperature=1.5)
    (got,) = torch.autograd.grad(loss, zs)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ TAID


def test_taid_at_t1_equals_fkl():
    zs, zt = _logits(25), _logits(26)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    taid = get_loss("taid")(zs, zt, mask, t=1.0)
    fkl = get_loss("fkl")(zs, zt, mask, temperature=1.0)
    assert taid.item() == pytest.approx(fkl.item(), rel=1e-6)


def test_taid_at_t0_targets_the_detached_student():
    zs = _logits(27).requires_grad_()
    zt = _logits(28)
    mask = torch.ones(2, 3)
    loss = get_loss("taid")(zs, zt, mask, t=0.0)
    # Target = q itself, so the loss is H(q) ...
    assert loss.item() == pytest.approx(_entropy64(zs.detach().numpy()).mean(), rel=1e-6)
    # ... and, the target being fixed, the gradient is (q - q) = 0, not dH(q)/dz.
    loss.backward()
    assert zs.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("t", [0.2, 0.4, 0.75])
def test_taid_gradient_equals_ce_with_fixed_target(t):
    zs = _logits(29, dtype=torch.float64).requires_grad_()
    zt = _logits(30, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1], [1, 1, 1]])
    p_t = torch.softmax((1 - t) * zs.detach() + t * zt, -1)
    ce = -(p_t * torch.log_softmax(zs, -1)).sum(-1)
    want_loss = ce[mask.bool()].mean()
    (want,) = torch.autograd.grad(want_loss, zs)
    loss = get_loss("taid")(zs, zt, mask, t=t)
    (got,) = torch.autograd.grad(loss, zs)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    # Closed form: (q - p_t) / (number of masked tokens) at masked positions.
    closed = (torch.softmax(zs.detach(), -1) - p_t) * mask[..., None] / mask.sum()
    torch.testing.assert_close(got.double(), closed, rtol=1e-5, atol=1e-7)


def test_taid_is_logit_interpolation_not_probability_mixture():
    zs, zt = _logits(38), _logits(39)
    mask = torch.ones(2, 3)
    t = 0.5
    log_q = np.log(_softmax64(zs.numpy()))
    prob_mix = 0.5 * _softmax64(zs.numpy()) + 0.5 * _softmax64(zt.numpy())
    with_prob_mix = -(prob_mix * log_q).sum(-1).mean()
    got = get_loss("taid")(zs, zt, mask, t=t).item()
    assert got == pytest.approx(ref_loss("taid", zs.numpy(), zt.numpy(), mask.numpy(), t=t),
                                rel=1e-6)
    assert abs(got - with_prob_mix) > 1e-2


def test_taid_validates_t_and_temperature():
    zs, zt, mask = _logits(31), _logits(32), torch.ones(2, 3)
    fn = get_loss("taid")
    for bad in (-0.1, 1.01):
        with pytest.raises(ValueError):
            fn(zs, zt, mask, t=bad)
    with pytest.raises(ValueError):
        fn(zs, zt, mask, t=0.5, temperature=2.0)
    with pytest.raises(TypeError):
        fn(zs, zt, mask)  # t is required
    with pytest.raises(ValueError):
        per_token_divergence("taid", zs, zt)
    # temperature=1 and unrelated parameters are accepted; t may be a 0-d tensor buffer.
    a = fn(zs, zt, mask, t=0.5, temperature=1.0, skew_alpha=0.3, scale_by_t2=True)
    b = fn(zs, zt, mask, t=torch.tensor(0.5))
    assert torch.equal(a, b)


def test_loss_functions_ignore_unrelated_parameters():
    zs, zt, mask = _logits(33), _logits(34), torch.ones(2, 3)
    fn = get_loss("rkl")
    assert torch.equal(fn(zs, zt, mask, t=0.3, kd_ratio=0.5), fn(zs, zt, mask))
    # ... but not the ones they use:
    assert not torch.equal(get_loss("srkl")(zs, zt, mask, skew_alpha=0.5),
                           get_loss("srkl")(zs, zt, mask))
    assert not torch.equal(get_loss("jsd")(zs, zt, mask, jsd_beta=0.5),
                           get_loss("jsd")(zs, zt, mask))


# ------------------------------------------------------------------- CE and mixing


def test_token_ce_matches_reference_and_ignores_labels():
    z = _logits(35)
    labels = torch.tensor([[3, -100, 0], [6, 2, -100]])
    got = token_ce(z, labels)
    logp = np.log(_softmax64(z.numpy()))
    picks = [logp[b, i, labels[b, i]] for b in range(2) for i in range(3) if labels[b, i] != -100]
    assert got.item() == pytest.approx(-np.mean(picks), rel=1e-6)
    # Ignored positions may hold any logits.
    z2 = z.clone()
    z2[0, 1] = 1e4
    z2[1, 2] = -1e4
    assert torch.equal(token_ce(z2, labels), got)
    assert token_ce(z, labels.masked_fill(labels == -100, 7), ignore_index=7).item() == \
        pytest.approx(got.item(), rel=1e-6)


def test_token_ce_all_ignored_gives_zero_with_a_graph():
    z = _logits(36).requires_grad_()
    loss = token_ce(z, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_token_ce_bf16_in_float32():
    z = _logits(37).bfloat16()
    labels = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert token_ce(z, labels).dtype == torch.float32
    assert torch.equal(token_ce(z, labels), token_ce(z.float(), labels))


def test_mix_with_ce_arithmetic():
    ce, kd = torch.tensor(2.0), torch.tensor(10.0)
    assert mix_with_ce(ce, kd, 0.7).item() == pytest.approx(0.3 * 2.0 + 0.7 * 10.0)
    assert mix_with_ce(ce, kd, 1.0).item() == 10.0
    assert mix_with_ce(ce, kd, 0.0).item() == 2.0
    with pytest.raises(ValueError):
        mix_with_ce(ce, kd, 1.2)
    ce_g = torch.tensor(2.0, requires_grad=True)
    kd_g = torch.tensor(10.0, requires_grad=True)
    mix_with_ce(ce_g, kd_g, 0.8).backward()
    assert ce_g.grad.item() == pytest.approx(0.2)
    assert kd_g.grad.item() == pytest.approx(0.8)
