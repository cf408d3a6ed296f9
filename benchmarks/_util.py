"""Shared helpers for benchmark scripts: argument parsing, atomic JSON output, environment stamp."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="write results as JSON to PATH")
    return p


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: str | None, results: dict) -> None:
    if not path:
        return
    from edge_asc._io import atomic_write_json

    atomic_write_json(path, {**results, "environment": environment()})


def goals_text(goals: dict[str, bool]) -> str:
    """'name met, other MISSED' for a benchmark's goal verdicts."""
    return ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in goals.items())
