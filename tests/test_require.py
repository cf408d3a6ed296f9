"""The optional-dependency check of conftest: skip a test for a missing optional module only outside CI; under CI
(or for a core module, or a broken install) fail. Proven on the helper and on a pytest run in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import OPTIONAL_MODULES, in_ci, optional_extra, require

ROOT = Path(__file__).resolve().parents[1]
MISSING = "edge_asc_test_no_such_module"


@pytest.fixture
def optional_missing(monkeypatch):
    monkeypatch.setitem(OPTIONAL_MODULES, MISSING, ("bench", "no-such-distribution"))
    return MISSING


def test_require_returns_the_module():
    assert require("numpy") is sys.modules["numpy"]


@pytest.mark.parametrize("value", ["1", "true", "True", "yes"])
def test_require_fails_under_ci_for_a_missing_optional_module(monkeypatch, optional_missing, value):
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match=r"not installed and CI is set.*edge-asc\[bench\]"):
        require(optional_missing)


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_require_skips_a_missing_optional_module_outside_ci(monkeypatch, optional_missing, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match=re.escape(f"'{MISSING}' is not installed")):
        require(optional_missing)


@pytest.mark.parametrize(("ci", "outcome"), [("1", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_tool_skips_outside_ci_and_fails_under_ci(monkeypatch, ci, outcome):
    """apt_tools.skip_or_fail: the policy of every install-or-skip tool fixture (mosquitto, chromium, the firmware
    toolchain)."""
    from apt_tools import skip_or_fail

    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no-such-tool"):
        skip_or_fail("no-such-tool not found")


def test_require_fails_for_a_missing_module_that_is_not_optional(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match="it is not optional"):
        require(MISSING)


def test_require_fails_for_a_broken_install(monkeypatch, tmp_path, optional_missing):
    # installed, but its own import of something else fails: not a reason to skip
    (tmp_path / f"{MISSING}.py").write_text("import edge_asc_test_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match="installed but does not import"):
        require(optional_missing)


def test_a_submodule_belongs_to_its_package_extra(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert optional_extra("ai_edge_litert.interpreter") == "pi"
    assert optional_extra("ethosu.vela") == "bench" and optional_extra("numpy") is None
    monkeypatch.setitem(OPTIONAL_MODULES, MISSING, ("bench", "no-such-distribution"))
    with pytest.raises(pytest.skip.Exception):
        require(f"{MISSING}.sub.module")


def _distributions(extras: dict[str, list[str]], extra: str) -> set[str]:
    """Distribution names an extra installs, following ``edge-asc[a,b]`` references to other extras."""
    out = set()
    for req in extras[extra]:
        name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()
        if name == "edge-asc":
            for other in re.search(r"\[(.*)\]", req).group(1).split(","):
                out |= _distributions(extras, other.strip())
        else:
            out.add(name)
    return out


def test_optional_modules_are_the_readme_extras():
    """Every optional module is installed by the extra it names (or, for onnx2tf, by the Makefile's --no-deps line)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    for module, (extra, dist) in OPTIONAL_MODULES.items():
        assert dist in _distributions(extras, extra) or f"{dist}==" in makefile, (module, extra, dist)
        assert f"| `{extra}` |" in readme, extra


def test_no_test_module_bypasses_the_check():
    """pytest.importorskip, pytest.skip and skipif would skip under CI too: every test module uses conftest.require
    (a module) or apt_tools.require_binary / skip_or_fail (a program) instead, which fail when CI is set."""
    helpers = {"test_require.py", "conftest.py", "apt_tools.py"}
    bypasses = ("pytest.importorskip(", "pytest.skip(", "skipif(")
    offenders = [f"{p.name}:{i}" for p in sorted((ROOT / "tests").glob("*.py")) if p.name not in helpers
                 for i, line in enumerate(p.read_text().splitlines(), 1) if any(b in line for b in bypasses)]
    assert offenders == [], f"use conftest.require / apt_tools.require_binary instead of a plain skip in {offenders}"


SUBPROCESS_TEST = f"""
from conftest import require
require("{MISSING}")

def test_never_reached():
    pass
"""


@pytest.mark.parametrize(("ci", "rc", "outcome"), [("1", 2, "Interrupted: 1 error during collection"),
                                                    ("", 0, "1 passed, 1 skipped")])
def test_a_test_file_needing_a_missing_module_errors_under_ci(tmp_path, ci, rc, outcome):
    """What CI sees: the module-level check of a test file fails the run under CI=1 and skips the file otherwise."""
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    conftest += f"\nOPTIONAL_MODULES[{MISSING!r}] = ('bench', 'no-such-distribution')\n"
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_needs_it.py").write_text(SUBPROCESS_TEST)
    (tmp_path / "test_other.py").write_text("def test_other():\n    pass\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "CI": ci}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", "/dev/null", str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == rc, out
    assert outcome in out, out
    if ci:
        assert "'edge_asc_test_no_such_module' is not installed and CI is set" in out and "Traceback" not in out
