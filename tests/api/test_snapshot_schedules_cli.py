"""``dockyard server create|update --snapshot-every D [--snapshot-keep K]`` and what
``server show`` says of the schedule, against a real server (the fixture of
tests/api/test_moves_cli.py: two hosts, instances web and db running)."""

from __future__ import annotations

import json

import pytest

from dockyard.cli.main import main
from tests.api.test_moves_cli import served  # noqa: F401 (the fixture)


def _refused(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0
    return str(capsys.readouterr().err)


@pytest.mark.usefixtures("served")
def test_update_sets_shows_and_turns_off_the_schedule(capsys):
    main(["server", "update", "web", "--snapshot-every", "6h", "--snapshot-keep", "5", "-fjson"])
    server = json.loads(capsys.readouterr().out)
    assert (server["snapshot_every"], server["snapshot_keep"]) == (21600, 5)
    main(["server", "show", "web"])
    shown = capsys.readouterr().out
    assert "every 6h, keep the last 5, none taken yet" in shown
    assert "snapshot_every" not in shown  # said once, in words
    main(["server", "update", "web", "--snapshot-every", "off", "-f", "json"])
    assert json.loads(capsys.readouterr().out)["snapshot_every"] is None
    main(["server", "show", "web"])
    assert "snapshots         -" in capsys.readouterr().out


@pytest.mark.usefixtures("served")
def test_bad_periods_are_refused_saying_what_to_write(capsys):
    err = _refused(capsys, ["server", "update", "web", "--snapshot-every", "6 parsecs"])
    assert "unknown duration unit 'parsecs'" in err and "6h" in err
    err = _refused(capsys, ["server", "update", "web", "--snapshot-every=-6h"])
    assert "write it like 6h" in err
    err = _refused(capsys, ["server", "update", "web", "--snapshot-every", "5m"])
    assert "give at least 15m" in err
    err = _refused(capsys, ["server", "update", "web", "--snapshot-keep", "0"])
    assert "greater than or equal to 1" in err
    err = _refused(capsys, ["server", "update", "web"])
    assert "nothing to change" in err


@pytest.mark.usefixtures("served")
def test_create_takes_a_schedule(capsys):
    argv = ["server", "create", "app", "--image", "img", "--flavor", "f", "--network", "net"]
    main([*argv, "--snapshot-every", "1d", "--snapshot-keep", "7", "-f", "json"])
    server = json.loads(capsys.readouterr().out)
    assert (server["snapshot_every"], server["snapshot_keep"]) == (86400, 7)
    err = _refused(capsys, [*argv[:2], "app2", *argv[3:], "--snapshot-keep", "2"])
    assert "--snapshot-keep goes with --snapshot-every" in err
