"""The Grafana dashboard (docker/grafana/), its provisioning and the compose `monitoring` profile.

The dashboard, provisioning and compose checks read files and run anywhere. One test starts a real
service and checks every metric the dashboard's PromQL reads against what its ``/metrics`` serves.
The live test brings the profile up through the Compose CLI and skips, with the reason, where no
Docker engine answers.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from changesync.metrics import Metrics
from changesync.settings import Settings
from compose_projects import ComposeCommandError, ComposeProject, port_is_free
from harness import EventStream, run_service, service_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
GRAFANA_DIR = REPO_ROOT / "docker" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "changesync.json"
DATASOURCES_DIR = GRAFANA_DIR / "provisioning" / "datasources"
DASHBOARD_PROVIDERS_DIR = GRAFANA_DIR / "provisioning" / "dashboards"
PROMETHEUS_CONFIG = REPO_ROOT / "docker" / "prometheus" / "prometheus.yml"
MONITORING_PROFILE = "monitoring"
PROMETHEUS_SERVICE, PROMETHEUS_PORT = "prometheus", 9090
GRAFANA_SERVICE, GRAFANA_PORT = "grafana", 3000
MONITORING_SERVICES = frozenset({PROMETHEUS_SERVICE, GRAFANA_SERVICE})
DEFAULT_SERVICES = frozenset({"mongo", "changesync-init", "changesync"})
# Where the images read their configuration.
PROMETHEUS_CONFIG_TARGET = "/etc/prometheus/prometheus.yml"
GRAFANA_PROVISIONING_TARGET = "/etc/grafana/provisioning"
# The oldest Grafana whose provisioning this dashboard is written for.
GRAFANA_MIN_MAJOR = 11
DATASOURCE_VARIABLE = "${datasource}"
# The labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Windows Grafana computes: $__rate_interval is at least four scrape intervals of the data source.
GRAFANA_WINDOWS = frozenset({"$__rate_interval", "$__range"})
# rate() and increase() need two samples in their window; four scrapes leave room for a missed one.
MIN_SCRAPES_PER_WINDOW = 4
# Grafana's grid is 24 columns wide; a 1080p screen shows about 28 rows of 30 px below the header.
GRID_COLUMNS = 24
SCREEN_ROWS = 28
SECONDS_UNIT = "s"
PER_SECOND_UNITS = frozenset({"ops", "reqps", "cps"})
PER_MINUTE_UNITS = frozenset({"opm", "reqpm", "cpm"})
COUNT_UNITS = frozenset({"short", "none"})
# Metrics of changesync/metrics.py deliberately left off the dashboard, with the reason.
NOT_ON_DASHBOARD: dict[str, str] = {}

# --- PromQL -----------------------------------------------------------------------------------------

PROMQL_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
PROMQL_RANGE = re.compile(r"\[(?P<window>[^\]]*)\]")
# A selector's label matchers, with the metric name in front of them when there is one.
PROMQL_MATCHERS = re.compile(r"(?P<metric>[A-Za-z_:][\w:]*)?\s*\{(?P<matchers>[^{}]*)\}")
PROMQL_MATCHER_LABEL = re.compile(r"(?P<label>[A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^()]*)\)")
# An identifier not inside a number, a duration or a Grafana variable; ``call`` when a ( follows.
PROMQL_IDENTIFIER = re.compile(r"(?<![\w:.$])(?P<name>[A-Za-z_:][\w:]*)(?P<call>\s*\()?")
# Words that are neither metrics nor functions: operators, modifiers, literals, grouping without labels.
PROMQL_KEYWORDS = frozenset(
    {"bool", "and", "or", "unless", "offset", "inf", "nan"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)
# The functions a dashboard query may call (a misspelt one would fail only in Grafana).
PROMQL_FUNCTIONS = frozenset(
    {"sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "rate", "irate", "increase", "delta"}
    | {"histogram_quantile", "clamp_min", "clamp_max", "abs", "round", "vector", "scalar", "absent", "time"}
    | {"max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "label_replace", "changes"}
)
RANGE_FUNCTIONS = re.compile(r"\b(?P<function>rate|irate|increase|delta|changes)\s*\(")
DURATION = re.compile(r"(?P<number>\d+)(?P<unit>ms|s|m|h|d|w|y)")
DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Grafana's label_values(selector, label) variable query.
LABEL_VALUES = re.compile(r"\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\)\s*")


@dataclass
class PromQL:
    """What one PromQL expression reads: metric names, the label names matched on each, grouping labels."""

    metrics: set[str] = field(default_factory=set)
    matched: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    windows: list[str] = field(default_factory=list)


def parse_promql(expr: str) -> PromQL:
    """The metric names, labels, functions and range windows of ``expr`` (enough of PromQL for dashboards).

    Strings (label values, where Grafana variables go) and range windows are taken out first; then the
    label matchers and grouping clauses; what is left are function names, keywords and metric names."""
    found = PromQL()
    text = PROMQL_STRING.sub('""', expr)
    found.windows = [match["window"].strip() for match in PROMQL_RANGE.finditer(text)]
    text = PROMQL_RANGE.sub(" ", text)

    def matchers(match: re.Match[str]) -> str:
        labels = {label["label"] for label in PROMQL_MATCHER_LABEL.finditer(match["matchers"])}
        metric = match["metric"]
        if metric is not None and metric.lower() not in PROMQL_KEYWORDS:
            found.metrics.add(metric)
            found.matched.setdefault(metric, set()).update(labels)
        return " "

    text = PROMQL_MATCHERS.sub(matchers, text)
    for grouping in PROMQL_GROUPING.finditer(text):
        found.grouping.update(label.strip() for label in grouping["labels"].split(",") if label.strip())
    text = PROMQL_GROUPING.sub(" ", text)
    for identifier in PROMQL_IDENTIFIER.finditer(text):
        name = identifier["name"]
        if identifier["call"]:
            found.functions.add(name)
        elif name.lower() not in PROMQL_KEYWORDS:
            found.metrics.add(name)
            found.matched.setdefault(name, set())
    assert "$" not in text, f"a Grafana variable outside a string or a range window: {expr}"
    return found


def seconds(duration: str) -> float:
    """A PromQL duration (``1m30s``, ``5m``, ``250ms``) in seconds."""
    parts = list(DURATION.finditer(duration))
    assert parts and "".join(part[0] for part in parts) == duration, f"{duration!r} is not a PromQL duration"
    return sum(int(part["number"]) * DURATION_S[part["unit"]] for part in parts)


class TestParsePromQL:
    @pytest.mark.parametrize(
        ("expr", "metrics", "functions", "grouping"),
        [
            ('sum(up{job=~"$job"})', {"up"}, {"sum"}, set()),
            (
                'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x="}{"}[$__rate_interval])))',
                {"a_seconds_bucket"},
                {"histogram_quantile", "sum", "rate"},
                {"le"},
            ),
            ("sum(rate(a_total[5m])) by (reason) * 60", {"a_total"}, {"sum", "rate"}, {"reason"}),
            ("a / on(instance) group_left b offset 1h", {"a", "b"}, set(), {"instance"}),
            ("max_over_time(c:recorded[1h:1m]) > bool 1e3", {"c:recorded"}, {"max_over_time"}, set()),
        ],
    )
    def test_reads_metric_names_and_nothing_else(self, expr, metrics, functions, grouping):
        """Metric names come out; functions, keywords, label names and values, numbers and windows do not."""
        parsed = parse_promql(expr)
        assert (parsed.metrics, parsed.functions, parsed.grouping) == (metrics, functions, grouping)

    def test_matched_labels_belong_to_their_metric(self):
        """The labels of a selector are recorded against the metric in front of it."""
        parsed = parse_promql('a{job="x", reason!~"y|z"} + b{instance=~"$i"}')
        assert parsed.matched == {"a": {"job", "reason"}, "b": {"instance"}}

    @pytest.mark.parametrize(("duration", "expected"), [("15s", 15), ("1m30s", 90), ("250ms", 0.25), ("2h", 7200)])
    def test_durations(self, duration, expected):
        """PromQL durations, units combined, in seconds."""
        assert seconds(duration) == expected


# --- the dashboard and its provisioning -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL query of the dashboard: a panel's target, or a variable's label_values selector."""

    where: str
    expr: str


def series_names(name: str, kind: str) -> set[str]:
    """The sample names Prometheus stores for a metric family of ``kind``, as PromQL reads them."""
    if kind == "counter":
        return {name if name.endswith("_total") else name + "_total"}
    if kind == "histogram":
        return {name + suffix for suffix in ("_bucket", "_sum", "_count")}
    if kind == "summary":
        return {name, name + "_sum", name + "_count"}
    return {name}


def catalogue_labels() -> dict[str, set[str]]:
    """Each sample name of changesync/metrics.py, with the labels it carries besides the target labels."""
    labels: dict[str, set[str]] = {}
    for metric in Metrics().catalogue:
        base = metric.name.removesuffix("_total") if metric.kind == "counter" else metric.name
        for name in series_names(base, metric.kind):
            labels[name] = set(metric.labels) | ({"le"} if name.endswith("_bucket") else set())
    return labels


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    queries = []
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            queries.append(Query(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            text = variable_query(variable)
            match = LABEL_VALUES.fullmatch(text)
            assert match is not None, f"variable {variable['name']}: not a label_values() query: {text}"
            queries.append(Query(f"variable {variable['name']}", match["selector"]))
    return queries


def variable_query(variable: dict[str, Any]) -> str:
    """A query variable's query: a string, or (as newer Grafana saves it) an object holding one."""
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves are not panels."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_metrics(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Every metric name the dashboard's queries read, with where each is read."""
    used: dict[str, list[str]] = {}
    for query in dashboard_queries(dashboard):
        for name in parse_promql(query.expr).metrics:
            used.setdefault(name, []).append(query.where)
    return used


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, str]]:
    """A service's bind mounts: container path -> (host path, mode)."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        mounts[target] = ((REPO_ROOT / source).resolve(), mode[0] if mode else "rw")
    return mounts


def published(spec: str) -> tuple[str | None, int, int]:
    """``(host ip, host port, container port)`` of a short-syntax ``ports`` entry."""
    parts = spec.split(":")
    return (parts[0] if len(parts) == 3 else None), int(parts[-2]), int(parts[-1])


def load_yaml_files(directory: Path) -> list[dict[str, Any]]:
    files = sorted(directory.glob("*.yml")) + sorted(directory.glob("*.yaml"))
    assert files, f"no provisioning file in {directory}"
    return [yaml.safe_load(path.read_text()) for path in files]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    document = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def datasources() -> list[dict[str, Any]]:
    return [source for document in load_yaml_files(DATASOURCES_DIR) for source in document["datasources"]]


@pytest.fixture(scope="module")
def providers() -> list[dict[str, Any]]:
    return [provider for document in load_yaml_files(DASHBOARD_PROVIDERS_DIR) for provider in document["providers"]]


def scrape_interval_s(prometheus_config: dict[str, Any]) -> float:
    return seconds(prometheus_config["global"]["scrape_interval"])


class TestDashboard:
    def test_is_a_dashboard_grafana_provisions(self, dashboard):
        """The file is a dashboard model of a recent schema, with a fixed uid and no database id."""
        assert dashboard.get("id") is None
        assert re.fullmatch(r"[\w-]{1,40}", dashboard["uid"])
        assert dashboard["title"]
        assert dashboard["schemaVersion"] >= 36
        ids = [panel["id"] for panel in panels_of(dashboard)]
        assert len(ids) == len(set(ids)), "panel ids repeat"

    def test_every_panel_has_a_query(self, dashboard):
        """Every panel has at least one target with a PromQL expression, each with its own refId."""
        for panel in panels_of(dashboard):
            targets = panel.get("targets", [])
            assert targets, f"panel {panel['title']!r} has no query"
            assert all(target.get("expr", "").strip() for target in targets), panel["title"]
            ref_ids = [target["refId"] for target in targets]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]

    def test_queries_go_to_the_datasource_variable(self, dashboard):
        """A Prometheus data source variable exists; every panel, target and query variable uses it."""
        variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        expected = {"type": "prometheus", "uid": DATASOURCE_VARIABLE}
        for panel in panels_of(dashboard):
            assert panel["datasource"] == expected, panel["title"]
            for target in panel["targets"]:
                assert target.get("datasource", expected) == expected, panel["title"]
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == expected, variable["name"]

    def test_queries_read_metrics_of_the_service(self, dashboard):
        """Every metric a query reads is one changesync/metrics.py declares (the live test checks /metrics)."""
        known = catalogue_labels()
        unknown = {name: where for name, where in dashboard_metrics(dashboard).items() if name not in known}
        assert unknown == {}

    def test_labels_are_labels_of_the_metrics(self, dashboard):
        """Matchers and grouping clauses name only labels that the metrics read carry (or job, instance)."""
        known = catalogue_labels()
        for query in dashboard_queries(dashboard):
            parsed = parse_promql(query.expr)
            for metric, labels in parsed.matched.items():
                assert labels <= known.get(metric, set()) | TARGET_LABELS, f"{query.where}: {metric} {labels}"
            carried = set().union(*(known.get(metric, set()) for metric in parsed.metrics)) | TARGET_LABELS
            assert parsed.grouping <= carried, f"{query.where}: by {parsed.grouping - carried}"
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                match = LABEL_VALUES.fullmatch(variable_query(variable))
                assert match is not None and match["label"] in TARGET_LABELS, variable["name"]

    def test_functions_are_promql_functions(self, dashboard):
        """Every function called is a PromQL function (a misspelt one fails only in Grafana)."""
        for query in dashboard_queries(dashboard):
            assert parse_promql(query.expr).functions <= PROMQL_FUNCTIONS, query.where

    def test_rate_windows_suit_the_scrape_interval(self, dashboard, prometheus_config):
        """rate() and increase() windows are Grafana's $__rate_interval or $__range, or span at least four
        scrapes of docker/prometheus/prometheus.yml."""
        minimum_s = MIN_SCRAPES_PER_WINDOW * scrape_interval_s(prometheus_config)
        for query in dashboard_queries(dashboard):
            parsed = parse_promql(query.expr)
            calls = len(RANGE_FUNCTIONS.findall(PROMQL_STRING.sub('""', query.expr)))
            assert calls == len(parsed.windows), f"{query.where}: a range function without a window, or a subquery"
            for window in parsed.windows:
                assert window in GRAFANA_WINDOWS or seconds(window) >= minimum_s, f"{query.where}: [{window}]"

    def test_quantiles_are_of_histogram_buckets_by_le(self, dashboard):
        """histogram_quantile reads _bucket series, aggregated by le."""
        for query in dashboard_queries(dashboard):
            parsed = parse_promql(query.expr)
            if "histogram_quantile" in parsed.functions:
                assert parsed.metrics and all(name.endswith("_bucket") for name in parsed.metrics), query.where
                assert "le" in parsed.grouping, query.where

    def test_units_fit_the_queries(self, dashboard):
        """Every panel has a unit: seconds for latencies and lag, per second or per minute for rates, and a
        plain number otherwise."""
        for panel in panels_of(dashboard):
            unit = panel["fieldConfig"]["defaults"].get("unit")
            exprs = [target["expr"] for target in panel["targets"]]
            parsed = [parse_promql(expr) for expr in exprs]
            if any("histogram_quantile" in found.functions for found in parsed) or all(
                name.endswith("_seconds") for found in parsed for name in found.metrics
            ):
                expected: frozenset[str] = frozenset({SECONDS_UNIT})
            elif all("rate" in found.functions for found in parsed):
                expected = (
                    PER_MINUTE_UNITS if all(expr.rstrip().endswith("* 60") for expr in exprs) else PER_SECOND_UNITS
                )
            else:
                expected = COUNT_UNITS
            assert unit in expected, f"panel {panel['title']!r}: unit {unit!r}, expected one of {sorted(expected)}"

    def test_series_have_legends(self, dashboard):
        """Every time series target has a legend: a name of its own, or the labels it is grouped by."""
        for panel in panels_of(dashboard):
            if panel["type"] != "timeseries":
                continue
            for target in panel["targets"]:
                legend = target.get("legendFormat", "")
                assert legend and legend != "__auto", f"panel {panel['title']!r} {target['refId']}"
                grouping = parse_promql(target["expr"]).grouping - {"le"}
                shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
                assert shown == grouping, f"panel {panel['title']!r}: legend {legend!r}, grouped by {grouping}"

    def test_fits_one_screen_without_overlaps(self, dashboard):
        """Panels sit inside the 24-column grid, do not overlap, and end within about one screen."""
        cells: dict[tuple[int, int], str] = {}
        for panel in dashboard["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
            assert pos["y"] + pos["h"] <= SCREEN_ROWS, f"panel {panel['title']!r} ends below row {SCREEN_ROWS}"
            for column in range(pos["x"], pos["x"] + pos["w"]):
                for row in range(pos["y"], pos["y"] + pos["h"]):
                    assert (column, row) not in cells, f"{panel['title']!r} overlaps {cells[(column, row)]!r}"
                    cells[(column, row)] = panel["title"]

    def test_lag_thresholds_match_the_readiness_bound(self, dashboard):
        """The change stream lag panels turn red at stream.ready_max_lag_s, where /readyz starts to fail."""
        bound = Settings().stream.ready_max_lag_s
        lag_panels = [
            panel
            for panel in panels_of(dashboard)
            if any("changesync_change_stream_lag_seconds" in target["expr"] for target in panel["targets"])
        ]
        assert lag_panels
        for panel in lag_panels:
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps[-1] == {"color": "red", "value": bound}, panel["title"]
            assert f"{bound:g} s" in panel["description"], panel["title"]


class TestProvisioning:
    def test_compose_mounts_files_that_exist(self, services):
        """Every bind mount of the monitoring services is a file or directory of the repository, read-only."""
        for name in MONITORING_SERVICES:
            mounts = volume_mounts(services[name])
            assert mounts, name
            for target, (source, mode) in mounts.items():
                assert source.is_relative_to(REPO_ROOT) and source.exists(), f"{name}: {source} -> {target}"
                assert mode == "ro", f"{name}: {target} is mounted {mode}"

    def test_prometheus_reads_the_config_of_the_repository(self, services):
        """prometheus.yml is mounted where the command line points --config.file."""
        service = services[PROMETHEUS_SERVICE]
        assert volume_mounts(service)[PROMETHEUS_CONFIG_TARGET][0] == PROMETHEUS_CONFIG
        assert f"--config.file={PROMETHEUS_CONFIG_TARGET}" in service["command"]

    def test_grafana_loads_the_provisioning_and_the_dashboards(self, services, providers):
        """The provisioning directory is mounted where Grafana reads it, and the file provider's path is
        where docker/grafana/dashboards is mounted."""
        mounts = volume_mounts(services[GRAFANA_SERVICE])
        assert mounts[GRAFANA_PROVISIONING_TARGET][0] == GRAFANA_DIR / "provisioning"
        (provider,) = providers
        assert provider["type"] == "file"
        assert mounts[provider["options"]["path"]][0] == DASHBOARD_FILE.parent
        home = services[GRAFANA_SERVICE]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        if home is not None:
            assert home == f"{provider['options']['path']}/{DASHBOARD_FILE.name}"

    def test_datasource_is_the_profiles_prometheus(self, datasources, prometheus_config):
        """The one provisioned data source is the default, a Prometheus at the prometheus service, with the
        scrape interval of prometheus.yml (from which $__rate_interval is computed)."""
        (source,) = datasources
        assert source["type"] == "prometheus"
        assert source["isDefault"] is True
        assert source["url"] == f"http://{PROMETHEUS_SERVICE}:{PROMETHEUS_PORT}"
        assert seconds(source["jsonData"]["timeInterval"]) == scrape_interval_s(prometheus_config)

    def test_prometheus_scrapes_every_serving_changesync_service(self, prometheus_config, image_services, app_paths):
        """The scrape targets are exactly the compose services that run `serve`, on the service's port and
        its /metrics path, without credentials (the endpoint needs none)."""
        targets = set()
        for job in prometheus_config["scrape_configs"]:
            assert job.get("metrics_path", "/metrics") == "/metrics" and "/metrics" in app_paths, job["job_name"]
            assert job.get("scheme", "http") == "http", job["job_name"]
            assert not {"basic_auth", "authorization", "oauth2"} & set(job), job["job_name"]
            for config in job["static_configs"]:
                targets.update(config["targets"])
        serving = {name for name, service in image_services.items() if service.get("command") == ["serve"]}
        assert targets == {f"{name}:{Settings().port}" for name in serving}

    def test_jobs_have_distinct_names(self, prometheus_config):
        """Each deployment is its own job, so the dashboard's job variable tells them apart."""
        names = [job["job_name"] for job in prometheus_config["scrape_configs"]]
        assert len(names) == len(set(names))


class TestMonitoringProfile:
    def test_profile_holds_prometheus_and_grafana_only(self, services):
        """The `monitoring` profile holds the two services, each in that profile alone."""
        in_profile = {name for name, service in services.items() if MONITORING_PROFILE in service.get("profiles", [])}
        assert in_profile == MONITORING_SERVICES
        assert all(services[name]["profiles"] == [MONITORING_PROFILE] for name in MONITORING_SERVICES)

    def test_default_stack_is_unchanged(self, services):
        """A plain `docker compose up` starts the default stack only, and nothing outside the profile
        depends on its services."""
        assert {name for name, service in services.items() if "profiles" not in service} == DEFAULT_SERVICES
        for name, service in services.items():
            if name not in MONITORING_SERVICES:
                assert not MONITORING_SERVICES & set(service.get("depends_on", {})), name

    def test_images_are_pinned(self, services):
        """Prometheus is pinned to major version 3; Grafana, which has no major-version tags, to a release
        of a version this dashboard is written for."""
        assert services[PROMETHEUS_SERVICE]["image"] == "prom/prometheus:v3"
        image = services[GRAFANA_SERVICE]["image"]
        match = re.fullmatch(r"grafana/grafana:(?P<major>\d+)\.\d+\.\d+", image)
        assert match is not None, image
        assert int(match["major"]) >= GRAFANA_MIN_MAJOR

    def test_ports_are_on_loopback(self, services):
        """Prometheus (9090) and Grafana (3000) are published on 127.0.0.1 only."""
        assert [published(spec) for spec in services[PROMETHEUS_SERVICE]["ports"]] == [
            ("127.0.0.1", PROMETHEUS_PORT, PROMETHEUS_PORT)
        ]
        assert [published(spec) for spec in services[GRAFANA_SERVICE]["ports"]] == [
            ("127.0.0.1", GRAFANA_PORT, GRAFANA_PORT)
        ]

    def test_grafana_admits_anonymous_viewers_only(self, services):
        """Anonymous visitors are Viewers; the admin password comes from GRAFANA_ADMIN_PASSWORD."""
        env = services[GRAFANA_SERVICE]["environment"]
        assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
        assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
        assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:-")

    def test_grafana_starts_once_prometheus_is_healthy(self, services):
        """Grafana waits for Prometheus's readiness, checked with the image's wget on /-/ready."""
        assert services[GRAFANA_SERVICE]["depends_on"] == {PROMETHEUS_SERVICE: {"condition": "service_healthy"}}
        test = services[PROMETHEUS_SERVICE]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "wget"]
        assert test[-1] == f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"

    def test_header_comment_names_every_profile(self, services):
        """The comment at the top of docker-compose.yml names every profile of the file."""
        header = []
        for line in COMPOSE_FILE.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        text = "\n".join(header)
        profiles = {profile for service in services.values() for profile in service.get("profiles", [])}
        missing = {profile for profile in profiles if f"`{profile}`" not in text}
        assert missing == set()


# --- the dashboard against a running service --------------------------------------------------------

JWT_SECRET = "a-dashboard-test-secret-long-enough-for-hs256"
FLOW = "flow-dashboard"
PUBLISHED_TYPE = "LOG_STREAM"


def token(*roles: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "dashboard-test", "exp": now + 300, "roles": list(roles)}, JWT_SECRET, algorithm="HS256")


def exposed_series(text: str) -> dict[str, set[str]]:
    """The series names PromQL can read from a /metrics body, by metric family. A labelled family without
    samples yet counts too, with the names its samples get once a label value appears."""
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names = {sample.name for sample in family.samples} | series_names(family.name, family.type)
        families[family.name] = {name for name in names if not name.endswith("_created")}
    return families


def is_created_series(name: str, families: dict[str, Any]) -> bool:
    """``X_created``, the creation time prometheus_client serves beside a counter or histogram ``X``."""
    return name.endswith("_created") and name.removesuffix("_created") in families


@pytest.fixture
async def scraped(mongo_backend, database_name) -> dict[str, Any]:
    """/metrics of a real service in JWT mode, fetched without credentials, after a little traffic: a
    delivered change, a published event, a refused one and a dropped change."""
    settings = service_settings(
        mongo_backend.uri,
        database_name,
        auth={"mode": "jwt", "jwt_secret": JWT_SECRET},
        publish={"event_types": (PUBLISHED_TYPE,)},
    )
    reader = {"Authorization": f"Bearer {token(settings.auth.service_role)}"}
    publisher = {"Authorization": f"Bearer {token(settings.publish.role)}"}
    body = {"type": PUBLISHED_TYPE, "data": {"executionId": "run-1", "nodeId": "n1", "seq": 1, "chunk": "posted"}}
    async with (
        run_service(settings) as service,
        httpx.AsyncClient(base_url=service.base_url) as http,
        AsyncMongoClient(mongo_backend.uri) as mongo,
        EventStream(service.events_url(FLOW, snapshot="false"), headers=reader) as stream,
    ):
        logs = mongo[database_name]["flow_logs"]
        await logs.insert_one({"chunk": "no flow id"})
        await logs.insert_one({"flowId": FLOW, "seq": 0, "chunk": "written"})
        assert (await stream.next()).data["document"]["chunk"] == "written"
        accepted = await http.post(f"/flows/{FLOW}/events", json=body, headers=publisher)
        assert accepted.status_code == 202, accepted.text
        assert (await stream.next()).data["document"]["chunk"] == "posted"
        refused = await http.post(f"/flows/{FLOW}/events", json=body)
        assert refused.status_code == 401
        response = await http.get("/metrics")
    assert response.status_code == 200, "Prometheus scrapes /metrics without credentials, JWT mode or not"
    return {"text": response.text, "families": exposed_series(response.text)}


class TestDashboardAgainstTheService:
    @pytest.mark.timeout(60)
    async def test_every_metric_the_dashboard_reads_is_served(self, scraped, dashboard):
        """Every metric name in the dashboard's PromQL is a series that a running service's /metrics serves,
        fetched without credentials from a service in JWT mode; the histogram behind the latency panels
        has samples after one delivered change."""
        served = set().union(*scraped["families"].values())
        missing = {name: where for name, where in dashboard_metrics(dashboard).items() if name not in served}
        assert missing == {}, "the dashboard reads metrics that /metrics does not serve"
        observed = sum(
            sample.value
            for family in text_string_to_metric_families(scraped["text"])
            for sample in family.samples
            if sample.name == "changesync_event_processing_seconds_count"
        )
        assert observed >= 1

    @pytest.mark.timeout(60)
    async def test_every_metric_served_is_on_the_dashboard(self, scraped, dashboard):
        """Every changesync metric family on /metrics is read by some panel, or is listed in NOT_ON_DASHBOARD
        with the reason it is left off."""
        used = set(dashboard_metrics(dashboard))
        families = {
            name: names
            for name, names in scraped["families"].items()
            if name.startswith("changesync_") and not is_created_series(name, scraped["families"])
        }
        assert families, "no changesync metric on /metrics"
        left_off = sorted(name for name, names in families.items() if not names & used and name not in NOT_ON_DASHBOARD)
        assert left_off == [], (
            f"not on {DASHBOARD_FILE.relative_to(REPO_ROOT)}: {left_off}; add a panel, or list the metric in "
            "NOT_ON_DASHBOARD with the reason"
        )
        assert set(NOT_ON_DASHBOARD) <= set(families), "NOT_ON_DASHBOARD names metrics that no longer exist"


# --- the profile, live -------------------------------------------------------------------------------

PROJECT_PREFIX = "changesync-monitoring-test"
PROMETHEUS_URL = f"http://127.0.0.1:{PROMETHEUS_PORT}"
GRAFANA_URL = f"http://127.0.0.1:{GRAFANA_PORT}"
HOST_PORTS = (27017, 8000, PROMETHEUS_PORT, GRAFANA_PORT)
DEFAULT_JOB = "changesync"
# The first `up` builds the changesync image and pulls mongo, prometheus and grafana.
UP_TIMEOUT_S = 600.0
DOWN_TIMEOUT_S = 120.0
# Bound for changesync to start (after mongo and the init job) and be scraped a few times.
SCRAPED_TIMEOUT_S = 180.0
POLL_INTERVAL_S = 1.0
HTTP_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 60


def poll(check: Callable[[], Any], what: str, timeout_s: float) -> Any:
    """``check()``'s first truthy answer; connection errors count as not yet. Fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.TransportError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(POLL_INTERVAL_S)
    raise AssertionError(f"{what}: not within {timeout_s:g} s (last: {last!r})")


@pytest.fixture
def monitoring_stack(docker_engine, compose_cli) -> Iterator[ComposeProject]:
    """The default stack and the `monitoring` profile up under a new project name (after the test: its
    logs printed, then down -v)."""
    for port in HOST_PORTS:
        if not port_is_free(port):
            pytest.skip(f"127.0.0.1:{port} is in use (another compose stack?), and the profile publishes it")
    admin_password = secrets.token_urlsafe(16)
    project = ComposeProject(
        compose_cli,
        f"{PROJECT_PREFIX}-{secrets.token_hex(3)}",
        (MONITORING_PROFILE,),
        {"GRAFANA_ADMIN_PASSWORD": admin_password},
    )
    try:
        project.run("up", "--detach", "--build", "changesync", GRAFANA_SERVICE, timeout_s=UP_TIMEOUT_S)
        yield project
    finally:
        with contextlib.suppress(ComposeCommandError, subprocess.TimeoutExpired):
            print(project.run("logs", "--no-color", "--tail", str(LOG_TAIL_LINES)))
        project.run("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout_s=DOWN_TIMEOUT_S)


class TestMonitoringProfileLive:
    @pytest.mark.timeout(900)  # the first run builds the image and pulls three others
    def test_prometheus_scrapes_changesync_and_grafana_shows_the_dashboard(self, monitoring_stack, dashboard):
        """Prometheus has the default stack's changesync target up; Grafana serves the provisioned dashboard
        to an anonymous viewer, its data source is healthy, and a dashboard query through it returns the
        service's series."""
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:

            def default_target_up() -> bool:
                response = http.get(f"{PROMETHEUS_URL}/api/v1/targets", params={"state": "active"})
                targets = response.json()["data"]["activeTargets"] if response.status_code == 200 else []
                return any(t["labels"]["job"] == DEFAULT_JOB and t["health"] == "up" for t in targets)

            poll(default_target_up, f"the {DEFAULT_JOB} target up in Prometheus", SCRAPED_TIMEOUT_S)

            def provisioned() -> dict[str, Any] | None:
                response = http.get(f"{GRAFANA_URL}/api/dashboards/uid/{dashboard['uid']}")
                return response.json() if response.status_code == 200 else None

            found = poll(provisioned, "the dashboard in Grafana", SCRAPED_TIMEOUT_S)
            assert found["dashboard"]["title"] == dashboard["title"]
            assert found["meta"]["provisioned"] is True
            assert len(panels_of(found["dashboard"])) == len(panels_of(dashboard))

            admin = ("admin", monitoring_stack.environ["GRAFANA_ADMIN_PASSWORD"])
            (source,) = http.get(f"{GRAFANA_URL}/api/datasources", auth=admin).json()
            health = http.get(f"{GRAFANA_URL}/api/datasources/uid/{source['uid']}/health", auth=admin)
            assert health.status_code == 200 and health.json()["status"] == "OK", health.text

            query = f'sum by (job) (changesync_clients_connected{{job="{DEFAULT_JOB}"}})'

            def answered() -> list[Any]:
                response = http.get(
                    f"{GRAFANA_URL}/api/datasources/proxy/uid/{source['uid']}/api/v1/query", params={"query": query}
                )
                return response.json()["data"]["result"] if response.status_code == 200 else []

            (series,) = poll(answered, "the service's series through Grafana", SCRAPED_TIMEOUT_S)
            assert series["metric"] == {"job": DEFAULT_JOB}
