"""Host-side helper of scripts/pi_check.sh (stdlib only, any Python >= 3.9).

    pi_compare.py mirror                      print the Debian mirror URL this host's apt uses for bookworm
    pi_compare.py clips DATA_DIR N            print up to N clips of DATA_DIR's evaluation split, one per scene
    pi_compare.py compare HOST PI --tol T     compare two `edge-asc classify --json` outputs; exit 1 on mismatch
    pi_compare.py invoke HOST PI              compare two pi_invoke.py outputs (raw int8 tensors, must be equal)
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import re
import sys
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"


def apt_mirror(suite: str = "bookworm", apt_dir: str = "/etc/apt") -> str:
    """First http(s) URI serving ``suite`` (not -security/-updates) in sources.list{,.d/*} of ``apt_dir``."""
    one_line = [f"{apt_dir}/sources.list", *sorted(glob.glob(f"{apt_dir}/sources.list.d/*.list"))]
    for name in one_line:
        try:
            lines = Path(name).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite and words[1].startswith("http"):
                return words[1].rstrip("/")
    for name in sorted(glob.glob(f"{apt_dir}/sources.list.d/*.sources")):
        try:
            text = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or suite not in fields.get("suites", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                if uri.startswith("http"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def pick_clips(data_dir: Path, n: int) -> list[Path]:
    """Up to ``n`` evaluation clips, one of each scene in the order the scenes appear (TAU layout)."""
    setup = data_dir / "evaluation_setup"
    files = sorted(setup.glob("*evaluate*.csv")) or sorted(setup.glob("*test*.csv"))
    rows: list[tuple[str, str]] = []
    for f in files:
        with open(f, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rows.append((row["filename"], row.get("scene_label") or row["filename"].split("/")[-1].split("-")[0]))
    if not rows:
        wavs = sorted((data_dir / "audio").glob("*.wav"))
        rows = [(str(p.relative_to(data_dir)), p.name.split("-")[0]) for p in wavs]
    by_scene: dict[str, list[Path]] = {}
    for name, scene in rows:
        if (data_dir / name).is_file():
            by_scene.setdefault(scene, []).append(data_dir / name)
    # the j-th scene contributes its j-th clip, so that the picks spread over recording devices too
    return [clips[j % len(clips)] for j, clips in enumerate(by_scene.values())][:n]


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"pi-check: cannot read {path}: {exc}") from None


def compare(host_path: str, pi_path: str, tol: float) -> int:
    """Clip and window labels must be identical and every probability within ``tol``; prints a table."""
    host, pi = _load(host_path), _load(pi_path)
    problems: list[str] = []
    if host["model_sha256"] != pi["model_sha256"]:
        problems.append(f"model sha256 differs: host {host['model_sha256'][:12]} vs aarch64 {pi['model_sha256'][:12]}")
    if host["labels"] != pi["labels"]:
        problems.append(f"label lists differ: {host['labels']} vs {pi['labels']}")
    if len(host["files"]) != len(pi["files"]):
        problems.append(f"{len(host['files'])} files on the host vs {len(pi['files'])} on aarch64")
    max_diff, n_windows = 0.0, 0
    print(f"{'clip':<44s} {'host label':<18s} {'aarch64 label':<18s} {'windows':>7s} {'max |dp|':>10s}")
    for h, p in zip(host["files"], pi["files"]):
        name = Path(h["file"]).name
        if name != Path(p["file"]).name:
            problems.append(f"file order differs: {name} vs {Path(p['file']).name}")
            continue
        d = max(abs(h["clip_probs"][k] - p["clip_probs"][k]) for k in h["clip_probs"])
        if len(h["windows"]) != len(p["windows"]):
            problems.append(f"{name}: {len(h['windows'])} windows on the host vs {len(p['windows'])} on aarch64")
        for i, (hw, pw) in enumerate(zip(h["windows"], p["windows"])):
            d = max(d, max(abs(a - b) for a, b in zip(hw["probs"], pw["probs"])))
            if hw["label"] != pw["label"]:
                problems.append(f"{name} window {i}: host says {hw['label']}, aarch64 says {pw['label']}")
        n_windows += len(h["windows"])
        if h["label"] != p["label"]:
            problems.append(f"{name}: host says {h['label']}, aarch64 says {p['label']}")
        if d > tol:
            problems.append(f"{name}: probabilities differ by {d:.2e} > {tol:g}")
        max_diff = max(max_diff, d)
        print(f"{name[:44]:<44s} {h['label']:<18s} {p['label']:<18s} {len(h['windows']):>7d} {d:>10.2e}")
    verdict = "PASS" if not problems else "FAIL"
    for msg in problems:
        print(f"  mismatch: {msg}")
    print(f"classify: {verdict}: {len(host['files'])} clips, {n_windows} windows, labels "
          f"{'identical' if not any('says' in m for m in problems) else 'DIFFER'}, "
          f"max |probability difference| {max_diff:.2e} (tolerance {tol:g})")
    return 0 if not problems else 1


def compare_invoke(host_path: str, pi_path: str) -> int:
    """Raw LiteRT outputs for the same seeded int8/float inputs: must be bit-identical."""
    host, pi = _load(host_path), _load(pi_path)
    n = len(host["outputs"])
    diffs = [i for i, (a, b) in enumerate(zip(host["outputs"], pi["outputs"])) if a != b]
    max_lsb = max((max(abs(x - y) for x, y in zip(host["outputs"][i], pi["outputs"][i])) for i in diffs), default=0)
    ok = n == len(pi["outputs"]) and not diffs
    print(f"litert invoke: {'PASS' if ok else 'FAIL'}: {n} seeded random inputs, raw {host['output_dtype']} outputs "
          f"{'bit-identical' if ok else f'differ on {len(diffs)} (max {max_lsb} steps)'} "
          f"(host {host['platform']}, aarch64 {pi['platform']})")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("mirror")
    c = sub.add_parser("clips")
    c.add_argument("data_dir", type=Path)
    c.add_argument("n", type=int)
    m = sub.add_parser("compare")
    m.add_argument("host")
    m.add_argument("pi")
    m.add_argument("--tol", type=float, default=1e-3)
    i = sub.add_parser("invoke")
    i.add_argument("host")
    i.add_argument("pi")
    args = ap.parse_args(argv)
    if args.cmd == "mirror":
        print(apt_mirror())
        return 0
    if args.cmd == "clips":
        for p in pick_clips(args.data_dir, args.n):
            print(p)
        return 0
    if args.cmd == "compare":
        return compare(args.host, args.pi, args.tol)
    return compare_invoke(args.host, args.pi)


if __name__ == "__main__":
    sys.exit(main())
