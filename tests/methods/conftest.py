from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdbench.methods import ScheduleContext, discover_methods, instantiate, resolve_runs


@pytest.fixture(scope="session")
def methods():
    return discover_methods("methods")


@pytest.fixture(scope="session")
def runs(methods):
    return resolve_runs({"methods": {"include": "all"}}, methods)


def make_profile(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"student_ce": rng.gamma(2.0, 1.0, n), "student_rouge_l": rng.uniform(0, 100, n),
                         "teacher_ce": rng.gamma(2.0, 0.5, n)}, index=[f"ex{i:04d}" for i in range(n)])


def make_context(n: int = 103, epochs: int = 10, seed: int = 0, profile: pd.DataFrame | None = None):
    profile = make_profile(n, seed) if profile is None else profile
    return ScheduleContext(tuple(profile.index), epochs, seed, profile)


def build(methods, runs, run_name: str, **overrides):
    run = runs[run_name]
    if overrides:
        from dataclasses import replace

        run = replace(run, hparams={**run.hparams, **overrides})
    return instantiate(run, methods)
