"""`shardlet scale` off a terminal (CI logs, pipes): a progress line only when a count changed."""

from __future__ import annotations

import pytest

from shardlet.scale import Progress


def test_off_a_terminal_no_line_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(["created", "ready"], 3) as p:
        assert not p.tty
        # the repeats, and a count that wobbles once done (a watch's late events), print nothing
        for phase, n in [("created", 3), ("ready", 3), ("ready", 3), ("ready", 3), ("created", 3), ("ready", 3),
                         ("ready", 4), ("ready", 3)]:
            p.set(phase, n)
    lines = capsys.readouterr().out.splitlines()
    # one line as the first count changed (the first line is due at once), one as all are done
    assert len(lines) == 2, lines
    assert "created 3/3" in lines[0] and "ready 0/3" in lines[0]
    assert "created 3/3" in lines[1] and "ready 3/3" in lines[1]
