"""The examples run and show what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_quickstart_corrects_every_frame(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 10
    for row in rows:
        before, single, per_frame = map(float, row[-3:])
        assert before > 0.03  # the camera's crosstalk, black level and drift
        assert per_frame < 0.001  # per-frame affine fit: down to the noise
        assert per_frame < single < before  # one matrix for all frames cannot follow the drift
    assert "max |inverse(apply(stack)) - stack| = " in lines[-1]
    assert float(lines[-1].split("= ")[1].split()[0]) < 1e-5
