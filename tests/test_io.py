"""edge_asc._io: whole stderr lines from concurrent threads (the soak benchmark and log shippers parse them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

WRITER = textwrap.dedent("""
    import sys, threading
    from edge_asc._io import stderr_line
    def run(tag):
        for i in range(2000):
            stderr_line(f"{tag}:{i}:" + "x" * 40)
    ts = [threading.Thread(target=run, args=(t,)) for t in "abcd"]
    [t.start() for t in ts]
    [t.join() for t in ts]
""")


def test_stderr_line_never_splits_a_line_between_threads():
    p = subprocess.run([sys.executable, "-c", WRITER], capture_output=True, text=True, timeout=60, check=True)
    lines = p.stderr.splitlines()
    assert len(lines) == 8000
    bad = [x for x in lines if not (x[0] in "abcd" and x.count(":") == 2 and x.endswith("x" * 40))]
    assert not bad, bad[:5]
    for tag in "abcd":
        assert [int(x.split(":")[1]) for x in lines if x[0] == tag] == list(range(2000))
