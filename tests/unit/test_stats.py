"""What `server stats` and `host stats` ask Prometheus and how they draw it."""

from __future__ import annotations

from dockyard.cli import stats as cli_stats
from dockyard.monitor import stats


def test_about_sixty_points_whatever_the_range_and_never_finer_than_a_scrape():
    assert stats.step_for(3600) == 60
    assert stats.step_for(86400) == 1440
    assert stats.step_for(60) == stats.MIN_STEP
    assert stats.step_for(3601) == 61  # rounded up: never more than POINTS points


def test_a_label_value_cannot_break_out_of_its_selector():
    assert stats.quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    (cpu, *_) = stats.host_panels('h"} or vector(1) #', 60)
    assert 'host="h\\"} or vector(1) #"' in cpu.query


def test_an_instances_panels_select_it_by_id_and_rate_over_two_scrapes_at_least():
    panels = stats.instance_panels("abc", 15)
    assert [p.name for p in panels] == [
        "cpu",
        "memory",
        "net rx",
        "net tx",
        "disk read",
        "disk write",
    ]
    cpu = panels[0]
    assert cpu.query == 'sum(rate(dockyard_instance_cpu_seconds_total{instance_id="abc"}[60s]))'
    assert all('instance_id="abc"' in p.query for p in panels)


def test_summary_is_current_average_and_peak():
    assert stats.summary([]) is None
    assert stats.summary([1.0, 3.0, 2.0]) == (2.0, 2.0, 3.0)


def test_a_sparkline_has_a_bar_per_step_and_a_blank_where_nothing_was_scraped():
    points = [[100.0, 0.0], [110.0, 5.0], [130.0, 10.0]]
    assert cli_stats.sparkline(points, 100.0, 10, 4) == "▁▅ █"
    assert cli_stats.sparkline([[100.0, 0.0]], 100.0, 10, 2) == "▁ "  # all zero: the floor


def test_values_read_in_their_unit():
    assert cli_stats.human(1536 * 1024 * 1024, "bytes") == "1.5 GiB"
    assert cli_stats.human(2048, "bytes/s") == "2 KiB/s"
    assert cli_stats.human(0.25, "cores") == "0.25 cores"
    assert cli_stats.human(None, "cores") == "-"
    assert cli_stats.human(17, "") == "17"


def test_draw_prints_a_row_per_panel_with_now_average_and_peak(capsys):
    answer = {
        "subject": "vm",
        "since": 3600,
        "step": 60,
        "series": [
            {
                "name": "cpu",
                "unit": "cores",
                "points": [[0.0, 0.5], [60.0, 1.0]],
                "current": 1.0,
                "average": 0.75,
                "peak": 1.0,
            },
            {
                "name": "tasks",
                "unit": "",
                "points": [],
                "current": None,
                "average": None,
                "peak": None,
            },
        ],
    }
    cli_stats.draw(answer)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "vm, the last 1h (a bar per 60 s)"
    assert out[1].split() == ["NOW", "AVERAGE", "PEAK"]
    cpu = out[2]
    assert cpu.startswith("cpu") and cpu.rstrip().endswith("1 cores  0.75 cores  1 cores")
    assert " " * 58 + "▅█  " in cpu  # a bar per minute, samples in the last two only
    assert out[3].split() == ["tasks", "no", "samples", "-", "-", "-"]
