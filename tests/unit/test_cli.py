"""The user commands: every shipped profile validates by name or file, `tables --profile` finds its
results and refuses another profile's, and every option has help text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from kdbench.cli import build_parser, check_results_belong, main
from kdbench.config import (WORKFLOW_CONFIG, differing_keys, load_profile, profile_file, shipped_profiles,
                            teacher_spec)
from kdbench.errors import ConfigError, ResultError
from kdbench.results import RESULT_SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted(p.stem if p.name != "config.yaml" else "default" for p in (REPO / "config").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _at_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_every_shipped_profile_is_found():
    assert shipped_profiles() == PROFILES and {"default", "smoke", "real-cpu", "paper-gpt2"} <= set(PROFILES)
    assert profile_file("default") == WORKFLOW_CONFIG
    assert profile_file("smoke") == Path("config/smoke.yaml") == profile_file("config/smoke.yaml")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("by", ["name", "file"])
def test_validate_config_accepts_every_shipped_profile_and_names_it(profile, by, capsys):
    arg = profile if by == "name" else str(profile_file(profile))
    assert main(["validate-config", arg]) == 0
    out = capsys.readouterr().out
    name = load_profile(profile)["name"]
    assert out.startswith(f"profile '{name}' (") and ": valid" in out.splitlines()[0]
    assert "runs (" in out and "sft" in out and f"results/{name}/" in out
    if profile != "default":      # an overlay is read over config/config.yaml, as snakemake --configfile does
        assert f"config/config.yaml + config/{profile}.yaml" in out.splitlines()[0]
        assert f"--configfile config/{profile}.yaml" in out


def test_an_overlay_alone_is_incomplete_and_says_which_key(capsys):
    assert main(["validate-config", "config/smoke.yaml", "--standalone"]) == 2
    assert "config/smoke.yaml" in capsys.readouterr().err


def test_an_unknown_profile_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="no profile 'nope'.*smoke"):
        profile_file("nope")


def _fake_results(tmp_path: Path, profile: str) -> Path:
    results = tmp_path / "results"
    (results / "teacher").mkdir(parents=True)
    spec = json.loads(json.dumps(teacher_spec(load_profile(profile))))
    (results / "teacher" / "train.json").write_text(json.dumps({"schema_version": RESULT_SCHEMA_VERSION,
                                                                "kind": "train", "spec": spec}))
    return results


def test_tables_refuse_results_of_another_profile_and_name_the_right_one(tmp_path):
    results = _fake_results(tmp_path, "smoke")
    with pytest.raises(ResultError, match=r"not produced by profile 'default'.*model\.architecture.*"
                                          r"they match profile 'smoke': kdbench tables --profile smoke"):
        check_results_belong(results, load_profile("default"), "config/config.yaml")
    check_results_belong(results, load_profile("smoke"), "config/config.yaml + config/smoke.yaml")


def test_where_the_data_live_does_not_make_a_mismatch(tmp_path):
    results = _fake_results(tmp_path, "real-cpu")
    doc = json.loads((results / "teacher" / "train.json").read_text())
    doc["spec"]["tokenizer"]["data"]["data_dir"] = "/elsewhere/data"
    doc["spec"]["device"] = "cuda"
    (results / "teacher" / "train.json").write_text(json.dumps(doc))
    check_results_belong(results, load_profile("real-cpu"), "real-cpu")


def test_tables_without_results_say_to_run_the_workflow(tmp_path, capsys):
    assert main(["tables", "--profile", "smoke", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "t")]) == 2
    assert "no results of profile 'smoke'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_differing_keys():
    assert differing_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3, "d": 0}}) == ["a.c", "a.d"]
    assert differing_keys([1], [1]) == []


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_user_command_and_option_has_help():
    parser = build_parser()
    assert "``" not in parser.format_help()
    commands = _subparsers(parser)
    assert {"stage", "tables", "score", "validate-config", "new-method", "check-method"} <= set(commands)
    for name, sub in commands.items():
        assert sub.description, f"kdbench {name} has no description"
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, f"kdbench {name} {action.dest}: no help text"
