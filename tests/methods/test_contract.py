"""Contract tests run over every method directory (lm-evaluation-harness style)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kdbench.errors import MethodError
from kdbench.methods import discover_methods, load_method_dir
from kdbench.scaffold import check_method, new_method

METHOD_DIRS = sorted(p.name for p in Path("methods").iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def test_every_expected_method_is_discovered():
    assert set(METHOD_DIRS) == set(discover_methods("methods")) >= {"vanilla_kd", "pocl", "cpd", "l2m_kd", "taid"}


@pytest.mark.parametrize("name", METHOD_DIRS)
def test_manifest_readme_and_faithfulness(name):
    info = discover_methods("methods")[name]
    manifest = info.manifest
    readme = (info.directory / "README.md").read_text(encoding="utf-8")
    assert manifest["paper"]["citation"] and manifest["deviations"]
    assert "Faithfulness" in readme and manifest["faithfulness"].split()[0] in readme.lower()
    if manifest["faithfulness"] == "re-implementation from paper":
        assert manifest["code"] is None
        assert "re-implementation" in readme.lower()
    else:
        assert manifest["code"].startswith("https://github.com/")
    assert "## Deviations" in readme


@pytest.mark.parametrize("name", METHOD_DIRS)
def test_check_method_runs_every_variant(name):
    report = check_method(name, Path("methods"))
    assert report["placeholders"] == [], "a shipped method still has template placeholders"
    assert report["variants"]
    for variant, result in report["variants"].items():
        assert result["steps"] > 0, variant
        assert result["final_loss"] is not None and result["final_loss"] == result["final_loss"], variant


def _copy_methods(tmp_path: Path) -> Path:
    root = tmp_path / "methods"
    shutil.copytree("methods", root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_new_method_scaffold_is_discovered_and_passes_check(tmp_path):
    root = _copy_methods(tmp_path)
    new_method("my_method", root)
    assert "my_method" in discover_methods(root)
    report = check_method("my_method", root)
    assert report["variants"]["my_method"]["steps"] > 0
    # ...but the template's placeholders are reported, each with file and line
    assert any(p.startswith(f"{root / 'my_method' / 'method.yaml'}:6: ") and "TODO: paper title" in p
               for p in report["placeholders"])
    assert any(str(root / "my_method" / "README.md") in p for p in report["placeholders"])


def test_check_method_warns_about_placeholders_on_the_console(tmp_path, capsys):
    from kdbench.cli import main

    root = _copy_methods(tmp_path)
    new_method("my_method", root)
    assert main(["check-method", "my_method", "--methods-root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "kdbench: warning:" in err and "template placeholder(s) left" in err and "method.yaml:6:" in err
    with pytest.raises(MethodError, match="already exists"):
        new_method("my_method", root)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "method.py").write_text("import does_not_exist\n"), "method.py failed to import"),
    (lambda d: (d / "method.py").write_text("x = 1\n"), "no subclass of kdbench.methods.Method"),
    (lambda d: (d / "README.md").unlink(), "lacks README.md"),
    (lambda d: (d / "method.yaml").write_text((d / "method.yaml").read_text().replace("version: 1", "verison: 1")),
     "unknown key 'verison'"),
    (lambda d: (d / "method.yaml").write_text((d / "method.yaml").read_text().replace("name: taid", "name: other")),
     "must equal the folder name"),
    (lambda d: (d / "method.yaml").write_text((d / "method.yaml").read_text().replace("t_start: 0.4", "t_begin: 0.4")),
     "unknown hyperparameter"),
])
def test_broken_method_directory_is_named(tmp_path, breakage, message):
    root = _copy_methods(tmp_path)
    breakage(root / "taid")
    with pytest.raises(MethodError, match=message) as err:
        discover_methods(root)
    assert str(root / "taid") in str(err.value)


def test_template_is_skipped_but_valid(tmp_path):
    assert "_template" not in discover_methods("methods")
    root = _copy_methods(tmp_path)
    target = new_method("from_template", root)
    assert load_method_dir(target).display_name == "FROM-TEMPLATE"
