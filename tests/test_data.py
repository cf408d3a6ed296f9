"""Dataset readers (TAU 2020/2022 Mobile, folder-per-class) and every bad-layout case, on generated fixtures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asc.cli import main
from edge_asc.data import (
    SEEN_DEVICES,
    UNSEEN_DEVICES,
    ClipRecord,
    Dataset,
    device_code,
    device_display,
    load_dataset,
)
from edge_asc.data.check import check_dataset
from edge_asc.errors import DatasetError
from edge_asc.spec import TAU_LABELS

SR = 8000


def _wav(path: Path, seconds: float = 0.1, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).standard_normal(int(SR * seconds)).astype(np.float32) * 0.1
    sf.write(str(path), x, SR, subtype="PCM_16")


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")


def make_tau(root: Path, year: int = 2020, labels=TAU_LABELS) -> dict[str, list[str]]:
    """A miniature TAU Mobile development folder in the exact layout of ``year`` (2020: 10-s names, 2022: 1-s pieces).

    Per label: location 0 in train with devices a, b, s1; location 1 in evaluate with a, s4. Returns the file names
    of each split.
    """
    meta, split = [], {"train": [], "evaluate": []}
    for li, lab in enumerate(labels):
        for loc, (sp, devs) in enumerate((("train", ("a", "b", "s1")), ("evaluate", ("a", "s4")))):
            city = ("barcelona", "lisbon")[loc]
            ident = f"{city}-{li * 10 + loc}"
            for d in devs:
                stem = (f"{lab}-{ident}-{li * 100 + loc}-{d}" if year == 2020
                        else f"{lab}-{ident}-{40000 + li}-{loc}-{d}")
                name = f"audio/{stem}.wav"
                _wav(root / name, seed=len(meta))
                meta.append([name, lab, ident, d])
                split[sp].append(name)
    by = {r[0]: r for r in meta}
    _tsv(root / "meta.csv", ["filename", "scene_label", "identifier", "source_label"], meta)
    for sp in ("train", "evaluate"):
        _tsv(root / "evaluation_setup" / f"fold1_{sp}.csv", ["filename", "scene_label"],
             [[n, by[n][1]] for n in split[sp]])
    _tsv(root / "evaluation_setup" / "fold1_test.csv", ["filename"], [[n] for n in split["evaluate"]])
    return split


# ---- records --------------------------------------------------------------------------------------------------
def test_device_groups_and_display_names():
    assert SEEN_DEVICES == ("a", "b", "c", "s1", "s2", "s3") and UNSEEN_DEVICES == ("s4", "s5", "s6")
    assert device_display("s4") == "S4" and device_code("S4") == "s4" and device_display("unknown") == "unknown"
    rec = ClipRecord(path="x.wav", label="park", device="s2", location="paris-1", split="train", clip_id="x")
    assert rec.device_name == "S2" and isinstance(rec.path, Path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.label = "bus"  # type: ignore[misc]
    with pytest.raises(DatasetError, match="split"):
        ClipRecord(path="x.wav", label="park", device="a", location="l", split="validation", clip_id="x")


# ---- TAU layouts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("year,layout", [(2020, "tau2020"), (2022, "tau2022")])
def test_tau_reader_exact_layout(tmp_path, year, layout):
    files = make_tau(tmp_path, year)
    ds = load_dataset(tmp_path)
    assert isinstance(ds, Dataset) and ds.layout == layout and ds.root == tmp_path
    assert ds.labels == TAU_LABELS
    assert len(ds.clips) == 50 and len(ds.split("train")) == 30 and len(ds.split("evaluate")) == 20
    assert [str(c.path.relative_to(tmp_path)) for c in ds.split("train")] == files["train"]
    test = ds.split("test")
    assert [c.clip_id for c in test] == [c.clip_id for c in ds.split("evaluate")]
    assert {c.split for c in test} == {"test"}
    c = ds.split("evaluate")[-1]
    assert c.label == "tram" and c.device == "s4" and c.path.is_file()
    if year == 2020:
        assert c.clip_id == "tram-lisbon-91-901-s4" and c.location == "lisbon-91"
    else:
        assert c.clip_id == "tram-lisbon-91-40009-1-s4" and c.location == "lisbon-91"
    assert not {c.location for c in ds.split("train")} & {c.location for c in ds.split("evaluate")}
    table = ds.counts()
    assert table.devices == ("a", "b", "s1", "s4")
    assert table.counts[0] == (2, 1, 1, 1) and table.total == 50
    assert ds.counts("train").per_device() == {"a": 10, "b": 10, "s1": 10, "s4": 0}
    assert "S4" in table.render().splitlines()[0]


def test_tau_reader_finds_unzipped_archive_folder_and_subset_labels(tmp_path):
    inner = tmp_path / "TAU-urban-acoustic-scenes-2022-mobile-development"
    make_tau(inner, 2022, labels=("tram", "airport", "park"))
    ds = load_dataset(tmp_path)
    assert ds.root == inner and ds.labels == ("airport", "park", "tram")  # TAU order


def test_tau_clips_in_no_fold_are_left_out(tmp_path):
    make_tau(tmp_path)
    meta = tmp_path / "meta.csv"
    _wav(tmp_path / "audio/park-paris-9-9-c.wav")
    meta.write_text(meta.read_text() + "audio/park-paris-9-9-c.wav\tpark\tparis-9\tc\n")
    ds = load_dataset(tmp_path)
    assert "park-paris-9-9-c" not in {c.clip_id for c in ds.clips} and len(ds.clips) == 50


def test_unknown_split_name(tmp_path):
    make_tau(tmp_path, labels=("park", "bus"))
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_dataset(tmp_path).split("val")


# ---- bad layouts: each one is a one-line DatasetError naming offenders and the count, and CLI exit 1 ------------
def _rewrite(path: Path, fn) -> None:
    path.write_text(fn(path.read_text()))


def _break_missing_audio(root: Path) -> None:
    for n in ("audio/park-barcelona-40-400-a.wav", "audio/park-barcelona-40-400-b.wav",
              "audio/bus-barcelona-10-100-s1.wav", "audio/tram-lisbon-91-901-s4.wav"):
        (root / n).unlink()


def _break_unknown_label(root: Path) -> None:
    _rewrite(root / "meta.csv", lambda s: s.replace("\tpark\t", "\tforest\t"))


def _break_missing_column(root: Path) -> None:
    _rewrite(root / "meta.csv", lambda s: s.replace("source_label", "device", 1))


def _break_comma_separated(root: Path) -> None:
    _rewrite(root / "meta.csv", lambda s: s.replace("\t", ","))


def _break_duplicate(root: Path) -> None:
    lines = (root / "meta.csv").read_text().splitlines()
    (root / "meta.csv").write_text("\n".join([*lines, lines[1], lines[2]]) + "\n")


def _break_missing_fold(root: Path) -> None:
    (root / "evaluation_setup" / "fold1_train.csv").unlink()


def _break_fold_not_in_meta(root: Path) -> None:
    _rewrite(root / "evaluation_setup" / "fold1_evaluate.csv", lambda s: s + "audio/ghost-x-1-1-a.wav\tairport\n")


def _break_fold_label_mismatch(root: Path) -> None:
    _rewrite(root / "evaluation_setup" / "fold1_train.csv", lambda s: s.replace("\tbus", "\ttram"))


def _break_empty_field(root: Path) -> None:
    _rewrite(root / "meta.csv", lambda s: s.replace("\tbarcelona-10\t", "\t\t", 1))


def _break_unreadable(root: Path) -> None:
    (root / "audio/metro-barcelona-20-200-a.wav").write_bytes(b"not audio at all")
    (root / "audio/metro-barcelona-20-200-b.wav").write_bytes(b"")


BAD = {
    "missing audio": (_break_missing_audio, (r"^4 audio file\(s\) listed in meta.csv are missing .*\(first: "
                                            r"'audio/bus-barcelona-10-100-s1.wav', ")),
    "unknown label": (_break_unknown_label, r"^1 unknown scene label\(s\) in meta.csv \(first: 'forest'\)"),
    "missing column": (_break_missing_column, r"^meta.csv lacks column\(s\) \['source_label'\]"),
    "comma separated": (_break_comma_separated, r"lacks column.*not tab-separated"),
    "duplicate filename": (_break_duplicate, r"^2 duplicate file name\(s\) in meta.csv \(first: 'audio/airport-"),
    "missing fold file": (_break_missing_fold, r"^evaluation_setup/fold1_train.csv is missing"),
    "fold clip not in meta": (_break_fold_not_in_meta, (r"^1 file\(s\) in evaluation_setup/fold1_evaluate.csv are not "
                                                       r"in meta.csv \(first: 'audio/ghost-x-1-1-a.wav'\)")),
    "fold label mismatch": (_break_fold_label_mismatch, (r"^3 file\(s\) in evaluation_setup/fold1_train.csv have a "
                                                        r"scene_label different")),
    "empty field": (_break_empty_field, r"^1 row\(s\) of meta.csv have empty or missing fields \(first: 'line "),
    "unreadable audio": (_break_unreadable, (r"^2 audio file\(s\) are unreadable or empty \(first: "
                                            r"'audio/metro-barcelona-20-200-a.wav', ")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_layouts_raise_one_line_errors(tmp_path, capsys, case):
    breaker, pattern = BAD[case]
    make_tau(tmp_path)
    breaker(tmp_path)
    with pytest.raises(DatasetError, match=pattern) as exc:
        check_dataset(tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and ": " in msg
    rc = main(["data", "check", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("edge-asc: error: ") and "Traceback" not in err
    assert err.strip().removeprefix("edge-asc: error: ") == msg


def test_many_offenders_are_truncated_with_a_count(tmp_path):
    make_tau(tmp_path)
    for p in (tmp_path / "audio").glob("*.wav"):
        p.unlink()
    with pytest.raises(DatasetError, match=r"^50 audio file\(s\) .* \(first: '[^']+', '[^']+', '[^']+', \.\.\.\)"):
        load_dataset(tmp_path)


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"neither meta\.csv"):
        load_dataset(tmp_path)


def test_truncated_audio_is_caught_and_deep_check_decodes_samples(tmp_path):
    make_tau(tmp_path, labels=("park", "bus"))
    p = tmp_path / "audio/bus-barcelona-10-100-a.wav"
    good = p.read_bytes()
    p.write_bytes(good[:-400])  # the header still claims the full length
    with pytest.raises(DatasetError, match=r"^1 audio file\(s\) are unreadable or empty \(first: 'audio/bus-"):
        check_dataset(tmp_path)
    x = np.zeros(800, np.float32)
    x[10] = np.nan
    sf.write(str(p), x, SR, subtype="FLOAT")
    check_dataset(tmp_path)  # the header is fine
    with pytest.raises(DatasetError, match=r"^1 audio file\(s\) are unreadable or empty"):
        check_dataset(tmp_path, deep=True)


# ---- folder-per-class ----------------------------------------------------------------------------------------
def _folders(root: Path, labels=("birds", "kitchen", "office"), n=10) -> None:
    for li, lab in enumerate(labels):
        for i in range(n):
            _wav(root / lab / f"{lab}_{i:02d}.wav", seed=li * 100 + i)
    (root / labels[-1] / "notes.txt").write_text("not audio")


def test_folder_reader_split_is_deterministic_and_stratified(tmp_path):
    _folders(tmp_path)
    ds = load_dataset(tmp_path)
    assert ds.layout == "folder" and ds.labels == ("birds", "kitchen", "office") and len(ds.clips) == 30
    assert {c.device for c in ds.clips} == {"unknown"} and ds.devices == ("unknown",)
    for lab in ds.labels:
        assert sum(c.label == lab for c in ds.split("evaluate")) == 3
        assert sum(c.label == lab for c in ds.split("train")) == 7
    again = load_dataset(tmp_path)
    assert [c.split for c in again.clips] == [c.split for c in ds.clips]
    splits = {s: [c.split for c in load_dataset(tmp_path, seed=s).clips] for s in range(5)}
    assert len({tuple(v) for v in splits.values()}) > 1  # the seed matters
    assert ds.split("test") == []
    assert ds.counts().render().splitlines()[0].split() == ["label", "unknown", "total"]


def test_folder_reader_uses_tau_order_and_rejects_duplicate_names(tmp_path):
    _folders(tmp_path, labels=("tram", "bus"), n=2)
    ds = load_dataset(tmp_path)
    assert ds.labels == ("bus", "tram") and len(ds.split("evaluate")) == 2
    _wav(tmp_path / "bus" / "tram_00.wav")
    with pytest.raises(DatasetError, match=r"^1 file name\(s\) occur in more than one label folder"):
        load_dataset(tmp_path)


def test_check_command_json(tmp_path, capsys):
    make_tau(tmp_path, 2022)
    assert main(["data", "check", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["layout"] == "tau2022" and rep["n_clips"] == 50
    assert rep["split_sizes"] == {"train": 30, "evaluate": 20, "test": 20}
    assert rep["sample_rates"] == {str(SR): 50} and rep["counts"]["devices"] == ["a", "b", "s1", "s4"]
    assert main(["data", "check", str(tmp_path), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "split 'train'" in out and out.rstrip().splitlines()[-1].split() == ["total", "10", "10", "10", "0", "30"]
