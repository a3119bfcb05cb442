"""The environment files agree: pyproject.toml, requirements.lock, environment.yml, the Makefile."""

from __future__ import annotations

import re
import tomllib

import yaml

from dcgan.paths import REPO_ROOT


def _lock() -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;]+)", line)
        if m:
            pins.setdefault(m.group(1).lower().replace("_", "-"), []).append(m.group(2))
    return pins


def test_every_dependency_is_locked_with_the_tested_versions():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    deps = pyproject["dependencies"] + [d for extra in pyproject["optional-dependencies"].values() for d in extra]
    pins = _lock()
    for dep in deps:
        name = re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is a dependency but not in requirements.lock: run `make lock`"
    assert pins["torch"] == ["2.13.0"] and pins["torchvision"] == ["0.28.0"]
    assert pins["jupyter-book"][0].startswith("1.")
    assert pyproject["requires-python"] == ">=3.11"


def test_no_registry_host_names_and_no_uv_lock():
    text = (REPO_ROOT / "requirements.lock").read_text()
    assert "://" not in text and "--index-url" not in text
    assert not (REPO_ROOT / "uv.lock").exists()


def test_environment_yml_uses_the_lock():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.lock" in pip and "-e ." in pip


def test_ci_runs_make_test():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci and "make test" in ci
    make = (REPO_ROOT / "Makefile").read_text()
    for target in ("setup:", "data:", "book:", "test:", "nbval-baseline:"):
        assert f"\n{target}" in make
