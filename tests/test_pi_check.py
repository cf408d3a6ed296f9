"""Static checks of `make pi-check` (scripts/pi_check.sh and its helpers); the check itself needs root, apt and
minutes of qemu, so it is not part of `make test`. These run in well under a second."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

from apt_tools import require_binary

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _helper():
    spec = importlib.util.spec_from_file_location("pi_compare", SCRIPTS / "pi_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_parses():
    bash = require_binary("bash", "bash")  # skips without it, fails under CI (tests/apt_tools.py)
    subprocess.run([bash, "-n", str(SCRIPTS / "pi_check.sh")], check=True)


def test_cpuinfo_is_a_raspberry_pi_4():
    text = (SCRIPTS / "pi_cpuinfo.txt").read_text()
    assert text.count("processor\t:") == 4
    assert text.count("CPU part\t: 0xd08") == 4  # Cortex-A72
    assert text.count("CPU implementer\t: 0x41") == 4  # Arm
    assert "Model\t\t: Raspberry Pi 4 Model B" in text


def test_mirror_from_deb822_and_one_line_sources(tmp_path):
    h = _helper()
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\n# comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n")
    assert h.apt_mirror(apt_dir=str(tmp_path)) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert h.apt_mirror(apt_dir=str(tmp_path)) == "http://other.example/debian"
    assert h.apt_mirror(suite="trixie", apt_dir=str(tmp_path)) == h.DEFAULT_MIRROR


def test_pick_clips_one_per_scene_spread_over_devices(tmp_path):
    h = _helper()
    (tmp_path / "audio").mkdir()
    (tmp_path / "evaluation_setup").mkdir()
    rows = []
    for scene in ("park", "bus", "tram"):
        for dev in ("a", "b", "c"):
            name = f"audio/{scene}-x-1-0-{dev}.wav"
            (tmp_path / name).write_bytes(b"")
            rows.append(f"{name}\t{scene}")
    (tmp_path / "evaluation_setup" / "fold1_evaluate.csv").write_text("filename\tscene_label\n" + "\n".join(rows))
    picks = [p.name for p in h.pick_clips(tmp_path, 10)]
    assert picks == ["park-x-1-0-a.wav", "bus-x-1-0-b.wav", "tram-x-1-0-c.wav"]
    assert len(h.pick_clips(tmp_path, 2)) == 2


def _classify_json(path, probs, labels=("a", "b")):
    files = [{"file": f"/x/clip{i}.wav", "label": labels[max(range(len(p)), key=p.__getitem__)],
              "clip_probs": dict(zip(labels, p)),
              "windows": [{"label": labels[max(range(len(p)), key=p.__getitem__)], "probs": p}]}
             for i, p in enumerate(probs)]
    path.write_text(json.dumps({"model_sha256": "ab" * 32, "labels": list(labels), "files": files}))
    return str(path)


def test_compare_passes_within_tolerance_and_fails_beyond(tmp_path, capsys):
    h = _helper()
    host = _classify_json(tmp_path / "h.json", [[0.9, 0.1], [0.3, 0.7]])
    close = _classify_json(tmp_path / "p.json", [[0.9004, 0.0996], [0.3, 0.7]])
    assert h.compare(host, close, 1e-3) == 0
    assert "max |probability difference| 4.00e-04" in capsys.readouterr().out
    assert h.compare(host, close, 1e-4) == 1
    flipped = _classify_json(tmp_path / "f.json", [[0.9, 0.1], [0.7, 0.3]])
    assert h.compare(host, flipped, 1.0) == 1
    assert "host says b, aarch64 says a" in capsys.readouterr().out


def test_invoke_comparison_is_exact(tmp_path):
    h = _helper()
    a = {"platform": "x86_64", "output_dtype": "int8", "outputs": [[1, -3], [5, 7]]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(dict(a, platform="aarch64")))
    (tmp_path / "c.json").write_text(json.dumps(dict(a, outputs=[[1, -3], [5, 8]])))
    assert h.compare_invoke(str(tmp_path / "a.json"), str(tmp_path / "b.json")) == 0
    assert h.compare_invoke(str(tmp_path / "a.json"), str(tmp_path / "c.json")) == 1
