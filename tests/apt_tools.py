"""Test helper (not collected): find a program from a Debian package, installing the package when it is missing and
we are root with apt (``apt-get install``, after ``apt-get update`` if the first try fails). Without it the test is
skipped, except under CI (``CI`` set), where a missing program is a failure: CI machines can install it."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest
from conftest import in_ci

SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"


def _apt_install(package: str, binary: str) -> str | None:
    """Install a Debian package when ``binary`` is missing (root + apt only). Returns the binary's path or None."""
    found = shutil.which(binary, path=SBIN_PATH)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", package]
    if subprocess.run(cmd, check=False, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-o", "DPkg::Lock::Timeout=600"], check=False, env=env,
                       capture_output=True, timeout=900)
        subprocess.run(cmd, check=False, env=env, capture_output=True, timeout=900)
    return shutil.which(binary, path=SBIN_PATH)


def require_binary(package: str, binary: str) -> str:
    """The path of ``binary`` (installing ``package`` with apt when possible); skip, or fail under CI, without it."""
    path = _apt_install(package, binary)
    if path is None:
        skip_or_fail(f"{binary} not found and could not be installed: run 'sudo apt-get install {package}'")
    return path


def skip_or_fail(message: str) -> NoReturn:
    """A required tool is missing: skip the test, or fail it under CI (CI machines can install it)."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
