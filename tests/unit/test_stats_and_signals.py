"""The seed-resampling test (kdbench.stats) and the difficulty-signal quality measures (kdbench.difficulty)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kdbench.difficulty import (DEGENERATE_SHARE, constant_share, fused_easiness, ranking_quality, ranks,
                                response_statistics, sequence_ce)
from kdbench.stats import bootstrap_p_value, bootstrap_rng, hierarchical_bootstrap, seed_draws


# --------------------------------------------------------------------------- hierarchical bootstrap
def _p(diffs: np.ndarray, samples: int = 4000) -> float:
    rng = bootstrap_rng("a", "b", "set")
    boot = hierarchical_bootstrap(diffs, samples, rng, seed_draws(diffs.shape[0], samples, rng))
    return bootstrap_p_value(boot, float(diffs.mean()))


def test_a_gain_that_holds_for_every_training_seed_is_significant():
    rng = np.random.default_rng(0)
    diffs = 3.0 + rng.normal(0, 5, size=(3, 200))            # every seed: +3 on average
    assert _p(diffs) < 0.01


def test_a_gain_carried_by_one_training_seed_is_not_significant():
    """The example-level bootstrap calls this a clear win (one seed +9, two seeds 0: mean +3 over 600
    example rows); resampling the seeds sees that retraining could erase it."""
    rng = np.random.default_rng(1)
    diffs = np.stack([9.0 + rng.normal(0, 5, 200), rng.normal(0, 5, 200), rng.normal(0, 5, 200)])
    flat = diffs.mean(axis=0)[None]                          # what a one-level bootstrap over examples sees
    assert _p(flat) < 0.01
    assert _p(diffs) > 0.05


def test_replicate_spread_grows_with_the_seed_to_seed_spread():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 3, size=(3, 200))
    calm = noise + np.array([[1.0], [1.0], [1.0]])
    wild = noise + np.array([[4.0], [-2.0], [1.0]])          # same mean, seeds disagree
    spread = {}
    for name, diffs in (("calm", calm), ("wild", wild)):
        r = bootstrap_rng(name)
        spread[name] = hierarchical_bootstrap(diffs, 2000, r, seed_draws(3, 2000, r)).std()
    assert spread["wild"] > 3 * spread["calm"]


def test_one_training_seed_is_the_example_bootstrap_and_shared_seed_draws_pair_the_sets():
    diffs = np.random.default_rng(3).normal(1, 2, size=(1, 100))
    boot = hierarchical_bootstrap(diffs, 1000, bootstrap_rng("x"))
    assert boot.mean() == pytest.approx(diffs.mean(), abs=0.05)
    assert boot.std() == pytest.approx(diffs.std() / 10, rel=0.15)
    draws = seed_draws(3, 50, bootstrap_rng("seeds"))
    assert draws.shape == (50, 3) and set(np.unique(draws)) <= {0, 1, 2}


# --------------------------------------------------------------------------- ranks and signal quality
def test_ties_get_their_average_rank():
    assert ranks([0.0, 0.0, 50.0, 0.0], larger_is_easier=True).tolist() == [3.0, 3.0, 1.0, 3.0]
    assert ranks([2.0, 1.0, 1.0], larger_is_easier=False).tolist() == [3.0, 1.5, 1.5]


def test_a_constant_signal_adds_nothing_to_the_fused_order():
    profile = pd.DataFrame({"student_ce": [3.0, 1.0, 2.0, 4.0], "student_rouge_l": [0.0] * 4})
    fused = fused_easiness(profile, ["student_ce", "student_rouge_l"])
    alone = fused_easiness(profile, ["student_ce"])
    assert np.argsort(-fused).tolist() == np.argsort(-alone).tolist() == [1, 2, 0, 3]


def test_constant_share_and_degenerate_flag():
    assert constant_share([1.0, 2.0, 3.0, 4.0]) == 0.25
    assert constant_share([0.0] * 7 + [1.0, 2.0, 3.0]) == 0.7
    truth = np.array([1, 2, 3, 4, 5] * 4)
    family = np.array(["a"] * 10 + ["b"] * 10)
    rng = np.random.default_rng(0)
    good = ranking_quality(truth + rng.normal(0, 0.1, 20), truth, family)
    assert good["spearman"] > 0.95 and good["spearman_within_family"] > 0.95 and not good["degenerate"]
    flat = ranking_quality(np.where(truth > 4, 1.0, 0.0), truth, family)
    assert flat["constant_share"] == 0.8 > DEGENERATE_SHARE and flat["degenerate"]


def test_within_family_rho_sees_what_pooling_hides():
    """A signal that only tells families apart has a pooled ρ but no within-family ρ."""
    truth = np.tile([1, 2, 3, 4, 5], 20)
    family = np.repeat(["easy", "hard"], 50)
    rng = np.random.default_rng(4)
    by_family = np.where(family == "hard", 10.0, 0.0) + rng.normal(0, 1, 100)
    truth_shifted = truth + np.where(family == "hard", 2, 0)     # hard family's levels also run higher
    quality = ranking_quality(by_family, truth_shifted, family)
    assert quality["spearman"] > 0.3 and abs(quality["spearman_within_family"]) < 0.3


# --------------------------------------------------------------------------- the profile's forward signals
def test_response_statistics_match_a_direct_computation(tiny_pair):
    student, teacher, encoded, pad_id = tiny_pair
    stats = response_statistics(student, encoded, teacher=teacher, pad_id=pad_id, batch_size=3,
                                device=torch.device("cpu"))
    for i, example in enumerate(encoded):
        ids = torch.tensor([example.input_ids])
        labels = torch.tensor(example.labels)
        keep = labels != -100
        with torch.no_grad():
            log_q = torch.log_softmax(student(ids).logits[0][keep].float(), -1)
            log_p = torch.log_softmax(teacher(ids).logits[0][keep].float(), -1)
        nll = -log_q.gather(1, labels[keep][:, None]).sum().item()
        assert stats["student_nll_sum"][i] == pytest.approx(nll, rel=1e-5)
        assert stats["student_ce"][i] == pytest.approx(nll / int(keep.sum()), rel=1e-5)
        assert stats["teacher_ce"][i] == pytest.approx(-log_p.gather(1, labels[keep][:, None]).mean().item(), rel=1e-5)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
        assert stats["teacher_student_kl"][i] == pytest.approx(kl, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(sequence_ce(student, encoded, pad_id=pad_id, batch_size=2, device=torch.device("cpu")),
                               stats["student_ce"], rtol=1e-6)


@pytest.fixture
def tiny_pair():
    from transformers import LlamaConfig, LlamaForCausalLM

    from kdbench.batching import Encoded

    def model(seed):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))

    rng = np.random.default_rng(0)
    encoded = []
    for i in range(7):
        n_prompt, n_resp = int(rng.integers(3, 8)), int(rng.integers(1, 5))
        ids = rng.integers(2, 40, n_prompt + n_resp).tolist()
        labels = [-100] * (n_prompt - 1) + ids[n_prompt:] + [1]
        encoded.append(Encoded(f"e{i}", tuple(ids), tuple(labels[:len(ids)])))
    return model(0), model(1), encoded, 0
