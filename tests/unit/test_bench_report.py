"""The benchmarks' pure parts: statistics, token counting, the storm plan, the report.

Fast: no process, no socket; results are built by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.agent import AgentRound
from benchmarks.handoff import Round
from benchmarks.load import TOKEN_MARK, TokenCounter
from benchmarks.machine import cpu_model, load_warning
from benchmarks.memory import MemoryResult
from benchmarks.report import (
    BEGIN,
    END,
    PageContext,
    VariantResults,
    comparison_rows,
    fmt_summary,
    markdown_table,
    render_page,
    render_table,
    replace_generated,
    verdict_summary,
)
from benchmarks.run import Bar
from benchmarks.stats import (
    cdf_points,
    percentile,
    percentile_counting_missing,
    ratio,
    summarize,
)
from benchmarks.storm import Footprint, StormResult, overlapping_sessions, plan_storm
from benchmarks.throughput import ThroughputPoint
from benchmarks.ttft import TtftResult
from jarvis_trio.wire import ChunkFormat

# -- stats -------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 201)]  # 1..200
    assert percentile(values, 0.5) == 101.0  # round(0.5 * 199) = 100 -> the 101st
    assert percentile(values, 0.99) == 198.0
    assert percentile(values, 1.0) == 200.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        percentile([1.0], 1.5)


def test_summary_counts_what_never_happened() -> None:
    s = summarize([4.0, None, 1.0, 2.0, None])
    assert (s.count, s.missing, s.total) == (3, 2, 5)
    assert (s.p50, s.p99, s.max) == (2.0, 4.0, 4.0)
    assert summarize([None, None]) == type(s)(0, 2, None, None, None)


def test_percentile_counting_missing_treats_never_as_latest() -> None:
    assert percentile_counting_missing([1.0] * 99 + [None], 0.5) == 1.0
    assert percentile_counting_missing([1.0] * 50 + [None] * 50, 0.99) is None
    assert percentile_counting_missing([], 0.99) is None


def test_ratio_and_cdf() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
    xs, ys = cdf_points([3.0, None, 1.0, 2.0])
    assert xs == [1.0, 2.0, 3.0]
    assert ys == [0.25, 0.5, 0.75]  # never reaches 1: one round never happened


# -- the client's token counting -----------------------------------------------------------


def test_token_counter_counts_content_chunks_across_reads() -> None:
    fmt = ChunkFormat(stream_id="chatcmpl-1", model="m", created=0)
    body = (fmt.role() + fmt.content("a") + fmt.content(" b") + fmt.finish("stop")).encode()
    assert body.count(TOKEN_MARK) == 2  # the role chunk is not a token
    for size in (1, 3, 7, len(body)):
        counter = TokenCounter()
        for i in range(0, len(body), size):
            counter.feed(body[i : i + size])
        assert counter.count == 2, size


# -- the storm plan ------------------------------------------------------------------------


def test_storm_plan_is_seeded_bounded_and_complete() -> None:
    plan = plan_storm(500, 20, seed=7, max_gap=0.05)
    assert plan == plan_storm(500, 20, seed=7, max_gap=0.05)
    assert plan != plan_storm(500, 20, seed=8, max_gap=0.05)
    requests = [r for session in plan for r in session]
    assert len(requests) == 500
    assert len({r.session for r in requests}) == len(plan) <= 20
    assert all(len({r.session for r in session}) == 1 for session in plan)
    assert all(0 <= r.gap_s <= 0.05 for r in requests)
    assert all(r.leave_after is None or 0 <= r.leave_after <= 5 for r in requests)
    assert any(r.leave_after is not None for r in requests)
    assert any("stall_after" in r.model for r in requests)


def _conn(closed: float | None, *requests: tuple[str, float]) -> dict[str, Any]:
    return {
        "closed": closed,
        "requests": [
            {"received": at, "headers": {"x-jarvis-session": f"owner/storm-{s}"}}
            for s, at in requests
        ],
    }


def test_overlapping_sessions_reads_the_wire_not_the_request_count() -> None:
    handed_over = [_conn(1.0, ("a", 0.0)), _conn(2.0, ("a", 1.0005))]  # closed, then B
    assert overlapping_sessions(handed_over) == 0
    both_open = [_conn(None, ("b", 0.0)), _conn(2.0, ("b", 1.0))]  # A still open
    late_close = [_conn(1.2, ("c", 0.0)), _conn(2.0, ("c", 1.0)), _conn(3.0, ("c", 2.5))]
    other = [_conn(None, ("x", 0.0))]
    other[0]["requests"][0]["headers"] = {"x-jarvis-session": "owner/bench-1"}
    assert overlapping_sessions(both_open + late_close + handed_over + other) == 2


def test_a_kept_alive_connection_is_held_only_until_its_answer_ended() -> None:
    done = _conn(None, ("k", 0.0))  # answered to its end at 0.5, then kept alive
    done["requests"][0].update(outcome="completed", ended=0.5)
    assert overlapping_sessions([done, _conn(2.0, ("k", 1.0))]) == 0
    cut = _conn(None, ("k", 0.0))  # cut short: held until its connection closes
    cut["requests"][0].update(outcome="client_closed", ended=0.5)
    assert overlapping_sessions([cut, _conn(2.0, ("k", 1.0))]) == 1


# -- the report ----------------------------------------------------------------------------


def test_fmt_summary() -> None:
    assert fmt_summary(summarize([1.0, 2.0, 3.0])) == "p50 2.0 / p99 3.0 / max 3.0"
    assert fmt_summary(summarize([1.0, None])) == "p50 1.0 / p99 1.0 / max 1.0; never in 1 of 2"
    assert fmt_summary(summarize([None, None])) == "never (2 of 2)"
    assert fmt_summary(summarize([])) == "not run"


def _point(c: int, served: int, tokens: int, cpu: float) -> ThroughputPoint:
    return ThroughputPoint(
        concurrency=c,
        window_s=2.0,
        tokens=tokens,
        server_cpu_s=cpu,
        client_cpu_s=0.1,
        sim_cpu_s=0.1,
        served=served,
        started=served,
        ttft_p50_s=0.01,
        ttft_p99_s=0.02,
    )


def _storm(double: int, hung: int, threads_after: int) -> StormResult:
    return StormResult(
        requests=100,
        sessions=10,
        seed=1,
        duration_s=3.0,
        completed=100 - hung,
        left=0,
        hung=hung,
        hung_unanswered=hung,
        errors=0,
        double_live_sessions=double,
        overlapping_sessions=double,
        max_session_peak=2 if double else 1,
        before=Footprint(threads=2, fds=9, rss_bytes=60 * 2**20),
        after=Footprint(threads=threads_after, fds=9, rss_bytes=61 * 2**20),
        upstream_open_after=0,
        join_timeouts=0,
    )


def _results() -> tuple[VariantResults, VariantResults]:
    fast = [Round(eof_ms=3.0, upstream_b_ms=5.0, ttft_b_ms=8.0)] * 100
    late = [*fast[:98], Round(3.0, 5.0, 30.0), Round(3.0, 5.0, 30.0)]
    slow = [Round(eof_ms=None, upstream_b_ms=5.0, ttft_b_ms=9.0)] * 5 + [Round(None, None, None)]
    trio = VariantResults(
        "trio",
        handoff={"silent": fast, "chatty": late},
        ttft=TtftResult(direct_ms=[2.0] * 10, gateway_ms=[5.0] * 10),
        throughput=[_point(100, 100, 4000, 1.6)],  # 400 µs per token
        storm=_storm(0, 0, 1),
        memory=MemoryResult(1000, 1000, 0, 60 * 2**20, 160 * 2**20, 1001),
    )
    asyncio = VariantResults(
        "asyncio",
        handoff={"silent": slow, "chatty": slow},
        ttft=TtftResult(direct_ms=[2.0] * 10, gateway_ms=[3.0] * 10),
        throughput=[_point(100, 6, 600, 0.18)],  # 300 µs per token
        storm=_storm(2, 3, 7),
        memory=MemoryResult(1000, 6, 0, 60 * 2**20, 80 * 2**20, 7),
    )
    return trio, asyncio


def test_rows_compare_both_variants_and_judge_trio_against_its_targets() -> None:
    rows = {r.measure: r for r in comparison_rows(*_results())}
    silent = rows["Handoff, silent upstream: B's first token (ms)"]
    assert (silent.trio, silent.verdict) == ("p50 8.0 / p99 8.0 / max 8.0", "pass")
    assert silent.asyncio == "p50 9.0 / p99 9.0 / max 9.0; never in 1 of 6"
    assert silent.ratio == "—"  # the baseline's p99 never came
    chatty = rows["Handoff, chatty upstream: B's first token (ms)"]
    assert chatty.verdict == "miss"  # two of 100 rounds at 30 ms: p99 is 30 ms
    eof = rows["Supersede, silent A → A's upstream closed (ms)"]
    assert (eof.trio, eof.asyncio, eof.verdict) == (
        "p50 3.0 / p99 3.0 / max 3.0",
        "never (6 of 6)",
        "pass",
    )
    assert "Stop → upstream closed (ms)" not in rows  # not run
    overhead = rows["TTFT overhead, p50 gateway - p50 direct (ms)"]
    assert (overhead.trio, overhead.asyncio, overhead.verdict) == ("3.00", "1.00", "miss")
    cpu = rows["Server CPU per relayed token at 100 streams (µs)"]
    assert (cpu.trio, cpu.asyncio, cpu.ratio, cpu.verdict) == ("400", "300", "1.33", "miss")
    rate = rows["Tokens/s at 100 streams (streams served at once)"]
    assert rate.asyncio == "300 (6 of 100 served)"
    assert rows["Storm: sessions the simulator counted two live requests in"].asyncio == "2 of 10"
    assert (
        rows[
            "Storm: sessions with a request sent while an earlier one was live on the wire"
        ].verdict
        == "pass"
    )
    assert rows["Storm: hung requests"].verdict == "pass"
    assert rows["Storm: server threads before → after"].trio == "2 → 1"
    memory = rows["Peak RSS at 1,000 concurrent streams (MiB)"]
    assert (memory.trio, memory.ratio) == ("160.0 (1000 of 1000 served)", "2.00")


def test_agent_rows_read_the_cancel_and_bs_first_token_of_each_variant() -> None:
    trio, asyncio = _results()
    assert not any(
        r.measure.startswith("Supersede during a tool call") for r in comparison_rows(trio, asyncio)
    )  # not run: no rows
    trio.agent = [AgentRound(cancel_ms=6.0, ttft_b_ms=20.0)] * 10
    asyncio.agent = [AgentRound(cancel_ms=9.0, ttft_b_ms=None)] * 2
    rows = {r.measure: r for r in comparison_rows(trio, asyncio)}
    cancel = rows["Supersede during a tool call → MCP server cancelled the call (ms)"]
    assert (cancel.trio, cancel.asyncio, cancel.ratio) == (
        "p50 6.0 / p99 6.0 / max 6.0",
        "p50 9.0 / p99 9.0 / max 9.0",
        "0.67",
    )
    assert (cancel.target, cancel.verdict) == ("p99 ≤ 500 ms", "pass")
    first = rows["Supersede during a tool call: B's first token (ms)"]
    assert (first.asyncio, first.target, first.verdict) == (
        "never (2 of 2)",
        "p99 ≤ 515 ms",
        "pass",
    )
    # Only the agent phase ran: the page has no empty sections of the others.
    ctx = PageContext("Results", "now", "quick", [("cores", "2")], [], 1.0)
    page = render_page(ctx, VariantResults("trio", agent=trio.agent), VariantResults("asyncio"))
    assert "Supersede during a tool call" in page
    assert not any(h in page for h in ("### Throughput", "### Storm", "### Memory"))
    assert "### Storm" in render_page(ctx, trio, asyncio)


def test_verdict_summary_names_the_misses() -> None:
    text = verdict_summary(comparison_rows(*_results()))
    assert text.startswith("jarvis-trio meets ")
    assert "Missed: Handoff, chatty upstream" in text


def test_tables_are_markdown() -> None:
    table = render_table(comparison_rows(*_results()))
    lines = table.splitlines()
    assert lines[0] == "| measure | jarvis-trio | asyncio | trio ÷ asyncio | target | trio |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert all(line.count(" | ") == 5 for line in lines[2:])
    assert markdown_table(("a",), [("x|y",)]).splitlines()[2] == "| x\\|y |"


def test_generated_part_is_replaced_and_hand_written_text_kept() -> None:
    first = replace_generated("# Benchmarks\n\nHand-written.\n", "one")
    assert first == f"# Benchmarks\n\nHand-written.\n\n{BEGIN}\none\n{END}\n"
    second = replace_generated(first + "\nAfter.\n", "two\n")
    assert second == f"# Benchmarks\n\nHand-written.\n\n{BEGIN}\ntwo\n{END}\n\nAfter.\n"
    assert replace_generated("", "x") == f"{BEGIN}\nx\n{END}\n"


def test_cpu_model_from_proc_cpuinfo() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon 8375C\n"
    assert cpu_model(text) == "Intel Xeon 8375C"


# -- what `make bench` prints -------------------------------------------------------------


def test_a_loaded_machine_is_warned_about_at_the_top_of_the_page() -> None:
    assert load_warning(0.85, 2) is None
    warning = load_warning(4.6, 2)
    assert warning is not None
    assert "load average 4.60" in warning
    assert "2 cores" in warning
    ctx = PageContext("Results", "now", "quick", [("cores", "2")], [], 1.0, warning=warning)
    page = render_page(ctx, VariantResults("trio"), VariantResults("asyncio"))
    lines = page.splitlines()
    assert lines[0] == "## Results"
    assert lines[2] == f"> **Warning:** {warning}"
    quiet = PageContext("Results", "now", "quick", [("cores", "2")], [], 1.0)
    assert "Warning" not in render_page(quiet, VariantResults("trio"), VariantResults("asyncio"))


def test_progress_bars_are_drawn_only_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a terminal (a log file, CI): no bar, one line per bar when it ends."""
    with Bar("trio handoff silent", 3, "round") as bar:
        bar()
        bar()
        bar.show(3, streams=10)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("trio handoff silent: 3 of 3 rounds, ")
    assert "\r" not in err
