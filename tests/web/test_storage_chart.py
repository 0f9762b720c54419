"""The storage chart: SVG text drawn from numbers, parsed back here as XML and checked.

The drawing (``web/storage_chart.py``) is pure, so most tests give it numbers and read the
document it returns with ``xml.etree``: the labels say the values in words, the bars are in
time order, pinned and damaged archives carry marks that are not colour alone, and hostile
text (a comment or name made to end an element) stays text. The route tests draw a real run.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from runarchive.core import create_archive, set_pinned
from runarchive.web.storage import chart_usage
from runarchive.web.storage_chart import ChartArchive, ChartUsage, render_chart, summary
from tests.support.web import WebEnv

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def archive_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "archive"]


def bar_groups(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-key", ""): g for g in root.iter(f"{SVG}g") if g.get("class") == "bar"}


def rect_of(group: ET.Element, cls: str) -> ET.Element:
    return next(r for r in group.iter(f"{SVG}rect") if r.get("class") == cls)


def texts(element: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in element.iter(f"{SVG}text")]


def archives(n: int) -> list[ChartArchive]:
    return [
        ChartArchive(f"run.2026110{i}T120000Z.zip", 1024 * (i + 1), T0 + timedelta(days=i))
        for i in range(n)
    ]


def test_the_chart_has_a_title_and_a_description_in_words() -> None:
    mib = 1024 * 1024
    usage = ChartUsage(
        archives_bytes=3 * mib,
        archives_count=3,
        run_bytes=10 * mib,
        quota_bytes=4 * mib,
        disk_free_bytes=5 * 1024 * mib,
    )
    root = parse(render_chart(archives(3), usage, runid="demo-run"))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "chart-title chart-desc"
    assert root.findtext(f"{SVG}title") == "Storage of demo-run"
    assert root.findtext(f"{SVG}desc") == (
        "3 archives, 3.0 MiB in all; quota 4.0 MiB (75 % used); the run itself 10.0 MiB; "
        "5.0 GiB free on the disk."
    )


def test_the_disk_bars_say_their_values_and_share_one_scale() -> None:
    usage = ChartUsage(archives_bytes=2048, archives_count=2, run_bytes=8192,
                       quota_bytes=4096, disk_free_bytes=6144)  # fmt: skip
    bars = bar_groups(parse(render_chart(archives(2), usage)))
    assert list(bars) == ["run", "archives", "free"]
    assert [texts(b)[0] for b in bars.values()] == [
        "Run 8.0 KiB",
        "Archives 2.0 KiB of 4.0 KiB quota (50 %)",
        "Free disk 6.0 KiB",
    ]
    assert [int(b.get("data-value", "")) for b in bars.values()] == [8192, 2048, 6144]
    widths = {key: float(rect_of(b, "value").get("width", "")) for key, b in bars.items()}
    assert widths["run"] == 4 * widths["archives"] == 640 - 32  # the largest fills the width
    assert 3 * widths["run"] == 4 * widths["free"]
    quota = rect_of(bars["archives"], "quota")
    assert float(quota.get("width", "")) == 2 * widths["archives"]
    assert bars["archives"].get("data-quota") == "4096"
    assert bars["free"].get("data-clipped") is None


def test_free_disk_past_the_runs_scale_is_cut_at_the_edge_and_says_so() -> None:
    usage = ChartUsage(archives_bytes=2048, archives_count=2, run_bytes=8192,
                       quota_bytes=None, disk_free_bytes=80 * 1024**3)  # fmt: skip
    bars = bar_groups(parse(render_chart(archives(2), usage)))
    free = bars["free"]
    assert texts(free) == ["Free disk 80.0 GiB (past the scale)"]
    assert free.get("data-clipped") == "true" and free.get("data-value") == str(80 * 1024**3)
    assert float(rect_of(free, "value").get("width", "")) == 640 - 32
    assert float(rect_of(bars["run"], "value").get("width", "")) == 640 - 32  # still readable
    assert len([ln for ln in free.iter(f"{SVG}line") if ln.get("class") == "break"]) == 2


def test_archives_over_their_quota_are_drawn_in_the_warning_colour_and_say_the_percent() -> None:
    usage = ChartUsage(archives_bytes=6000, archives_count=2, quota_bytes=4000)
    bar = bar_groups(parse(render_chart(archives(2), usage)))["archives"]
    assert texts(bar) == ["Archives 5.9 KiB of 3.9 KiB quota (150 %)"]
    value = rect_of(bar, "value")
    assert value.get("fill") == "#b42318"


def test_without_usage_only_the_archives_total_from_the_rows_is_drawn() -> None:
    root = parse(render_chart(archives(3)))
    bars = bar_groups(root)
    assert list(bars) == ["archives"]
    assert texts(bars["archives"]) == ["Archives 6.0 KiB"]
    assert root.findtext(f"{SVG}desc") == "3 archives, 6.0 KiB in all."


def test_the_bars_run_oldest_to_newest_whatever_order_they_come_in() -> None:
    given = list(reversed(archives(5)))
    groups = archive_groups(parse(render_chart(given)))
    assert [g.get("data-name") for g in groups] == [a.name for a in archives(5)]
    xs = [float(g.find(f"{SVG}rect").get("x", "")) for g in groups]  # type: ignore[union-attr]
    heights = [float(g.find(f"{SVG}rect").get("height", "")) for g in groups]  # type: ignore[union-attr]
    assert xs == sorted(xs) and len(set(xs)) == 5
    assert heights == sorted(heights) and heights[-1] == 160  # the biggest fills the plot
    assert heights[0] == 160 / 5


def test_the_time_axis_names_the_first_and_last_times() -> None:
    sizes = next(
        g for g in parse(render_chart(archives(3))).iter(f"{SVG}g") if g.get("id") == "sizes"
    )
    axis = [t for t in texts(sizes) if t.endswith("UTC")]
    assert axis == ["2026-11-01 12:00 UTC", "2026-11-03 12:00 UTC"]
    assert "3.0 KiB" in texts(sizes)  # the scale's top


def test_pinned_and_damaged_archives_carry_marks_not_only_colours() -> None:
    rows = archives(3)
    rows[0] = ChartArchive(rows[0].name, rows[0].size, rows[0].created, pinned=True)
    rows[2] = ChartArchive(rows[2].name, rows[2].size, rows[2].created, damaged=True)
    root = parse(render_chart(rows))
    groups = archive_groups(root)
    assert [texts(g) for g in groups] == [["P"], [], ["!"]]
    assert [(g.get("data-pinned"), g.get("data-damaged")) for g in groups] == [
        ("true", "false"), ("false", "false"), ("false", "true")]  # fmt: skip
    assert "(pinned)" in (groups[0].findtext(f"{SVG}title") or "")
    assert "(damaged)" in (groups[2].findtext(f"{SVG}title") or "")
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("id") == "legend")
    assert texts(legend) == ["archive", "P pinned", "! damaged"]
    assert summary(rows, None).endswith("; 1 pinned; 1 damaged.")


def test_hostile_names_and_comments_stay_text_in_a_well_formed_document() -> None:
    comment = '</title><script>alert(1)</script>"&\x01\x1b]8;;'
    name = 'evil"><script>x</script>.zip'
    root = parse(render_chart([ChartArchive(name, 10, T0, comment=comment)], runid="<b>&"))
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert root.findtext(f"{SVG}title") == "Storage of <b>&"
    (group,) = archive_groups(root)
    assert group.get("data-name") == name
    title = group.findtext(f"{SVG}title") or ""
    assert title.endswith('— </title><script>alert(1)</script>"&\ufffd\ufffd]8;;')


def test_no_archives_says_so() -> None:
    root = parse(render_chart([]))
    assert archive_groups(root) == []
    assert "No archives yet" in texts(root)
    assert root.findtext(f"{SVG}desc") == "0 archives, 0 B in all."


def test_a_usage_block_missing_its_counts_or_malformed_is_ignored() -> None:
    assert chart_usage({}) is None
    assert chart_usage({"usage": None}) is None
    assert chart_usage({"usage": {"archives_bytes": 1}}) is None
    assert chart_usage({"usage": {"archives_bytes": True, "archives_count": 1}}) is None
    got = chart_usage({"usage": {"archives_bytes": 5, "archives_count": 1, "run_bytes": "9",
                                 "quota_bytes": None, "disk_free_bytes": 7}})  # fmt: skip
    assert got == ChartUsage(5, 1, run_bytes=None, quota_bytes=None, disk_free_bytes=7)


def test_the_route_draws_the_runs_archives_with_their_pins(web: WebEnv) -> None:
    run = web.new_run()
    second = create_archive(run.path, "second <b>&amp;</b>").name
    set_pinned(run.path, second, True)
    response = web.as_role("owner").get(f"/runs/{run.runid}/archive/storage.svg")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    root = parse(response.get_data(as_text=True))
    groups = archive_groups(root)
    assert [(g.get("data-name"), g.get("data-pinned")) for g in groups] == [
        (run.archive, "false"), (second, "true")]  # fmt: skip
    listed = web.as_role("owner").get(f"/runs/{run.runid}/archive/list").get_json()["archives"]
    sizes = {row["name"]: row["size"] for row in listed}
    assert {g.get("data-name"): int(g.get("data-size", "")) for g in groups} == sizes
    assert "second <b>&amp;</b>" in (groups[1].findtext(f"{SVG}title") or "")
    assert root.findtext(f"{SVG}title") == f"Storage of {run.runid}"


def test_the_chart_is_drawn_at_the_width_asked_for_within_its_range() -> None:
    narrow = parse(render_chart(archives(3), width=320))
    assert (narrow.get("width"), narrow.get("viewBox", "").split()[2]) == ("320", "320")
    xs = [float(g.find(f"{SVG}rect").get("x", "")) for g in archive_groups(narrow)]  # type: ignore[union-attr]
    assert max(xs) < 320 - 16
    sizes = next(g for g in narrow.iter(f"{SVG}g") if g.get("id") == "sizes")
    assert texts(sizes)[-2:] == ["2026-11-01", "2026-11-03"]  # days only: the times would touch
    for width in (319, 1281):
        with pytest.raises(ValueError, match="width"):
            render_chart(archives(1), width=width)


@pytest.mark.parametrize("width", ["abc", "100", "2000", "-400", "4.5e2", "٣٦٠"])
def test_the_route_refuses_a_width_out_of_range_or_not_a_number(web: WebEnv, width: str) -> None:
    run = web.new_run()
    response = web.as_role("owner").get(f"/runs/{run.runid}/archive/storage.svg?width={width}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_input"
    assert (
        "width must be a whole number from 320 to 1280" in response.get_json()["error"]["message"]
    )


def test_the_route_draws_at_the_width_asked_for(web: WebEnv) -> None:
    run = web.new_run()
    response = web.as_role("owner").get(f"/runs/{run.runid}/archive/storage.svg?width=360")
    assert parse(response.get_data(as_text=True)).get("width") == "360"


def test_the_route_draws_the_lists_usage_as_the_disk_bars(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    usage = owner.get(f"/runs/{run.runid}/archive/list").get_json()["usage"]
    root = parse(owner.get(f"/runs/{run.runid}/archive/storage.svg").get_data(as_text=True))
    bars = bar_groups(root)
    assert list(bars) == ["run", "archives", "free"]
    assert int(bars["run"].get("data-value", "")) == usage["run_bytes"] > 0
    assert int(bars["archives"].get("data-value", "")) == usage["archives_bytes"] > 0
    assert abs(int(bars["free"].get("data-value", "")) - usage["disk_free_bytes"]) < 2**26
    assert usage["quota_bytes"] is None and bars["archives"].get("data-quota") is None
    assert "free on the disk" in (root.findtext(f"{SVG}desc") or "")
