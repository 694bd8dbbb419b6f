"""``changesync check``: can this deployment serve our change stream, and are the routes set up?"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from filters import Route

from .errors import NotAReplicaSetError, SourceError, SourceUnavailableError
from .mongo import Database, open_database
from .queries import watch_pipeline
from .settings import Settings

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
# How long ``check`` waits for a server to answer: it diagnoses, so it should not hang.
CHECK_TIMEOUT_MS = 5_000


@dataclass(slots=True)
class Finding:
    status: str
    subject: str
    message: str
    detail: str = ""
    """More for ``--verbose``: the driver's full account, for example."""


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: str, subject: str, message: str, detail: str = "") -> None:
        self.findings.append(Finding(status, subject, message, detail))

    @property
    def failed(self) -> bool:
        return any(finding.status == FAIL for finding in self.findings)

    def render(self, *, verbose: bool = False) -> str:
        width = max((len(finding.subject) for finding in self.findings), default=0)
        lines = []
        for finding in self.findings:
            lines.append(f"[{finding.status.upper():4}] {finding.subject.ljust(width)}  {finding.message}")
            if verbose and finding.detail:
                lines.extend("       " + line for line in finding.detail.splitlines())
        lines.append("result: " + ("problems found" if self.failed else "ready"))
        if self.failed and not verbose and any(finding.detail for finding in self.findings):
            lines.append("(--verbose shows the details)")
        return "\n".join(lines)


def pre_image_needs(route: Route) -> list[str]:
    """Why a route needs pre-/post-images; every route needs them for update patches."""
    needs = ["update patches and documents"]
    if route.flow_id_path != "_id":
        needs.append(f"routing deletes by {route.flow_id_path}")
    if route.drop_when:
        needs.append("checking drop_when on updates and deletes")
    return needs


async def run_check(settings: Settings, *, fix: bool = False) -> Report:
    database = open_database(settings.mongodb_uri, settings.database, server_selection_timeout_ms=CHECK_TIMEOUT_MS)
    try:
        return await _check(database, settings, fix=fix)
    finally:
        await database.close()


def _detail(exc: SourceError) -> str:
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else ""


async def _check(database: Database, settings: Settings, *, fix: bool) -> Report:
    report = Report()
    try:
        hello = await database.hello()
    except SourceUnavailableError as exc:
        report.add(FAIL, "connection", f"cannot reach {settings.redacted_uri}: {exc.cause}", _detail(exc))
        return report
    except SourceError as exc:
        report.add(FAIL, "connection", f"{settings.redacted_uri} refused hello: {exc.cause}", _detail(exc))
        return report
    if hello.get("setName"):
        report.add(OK, "deployment", f"replica set {hello['setName']!r}, primary {hello.get('primary', '?')}")
    elif hello.get("msg") == "isdbgrid":
        report.add(OK, "deployment", "sharded cluster (mongos)")
    else:
        report.add(FAIL, "deployment", "standalone server: change streams need a replica set (even a single node)")
        return report
    try:
        report.add(OK, "server", f"version {await database.server_version()}")
    except SourceError:
        report.add(WARN, "server", "buildInfo not permitted; version unknown")

    try:
        stream = await database.open_stream(watch_pipeline(settings.routes), max_await_time_ms=1000)
        await stream.close()
        report.add(OK, "change stream", f"opened on database {settings.database!r}")
    except NotAReplicaSetError as exc:
        report.add(FAIL, "change stream", exc.cause, _detail(exc))
        return report
    except SourceError as exc:
        report.add(FAIL, "change stream", f"cannot open on {settings.database!r}: {exc.cause}", _detail(exc))
        return report

    await _check_routes(database, settings.routes, report, fix=fix)
    return report


async def routes_without_images(database: Database, routes: Sequence[Route]) -> tuple[list[Route], set[str]]:
    """Routes whose collection has pre-/post-images off, and the names of existing collections."""
    enabled = await database.image_settings()
    return [route for route in routes if not enabled.get(route.collection, False)], set(enabled)


async def warn_about_images(database: Database, routes: Sequence[Route]) -> None:
    """Log, at start-up, every route that runs degraded because pre-images are off."""
    try:
        missing, _ = await routes_without_images(database, routes)
    except SourceError as exc:
        logger.warning("could not inspect collection options (%s); run `changesync check`", exc.cause)
        return
    for route in missing:
        logger.warning(
            "route %s: pre-images are off; needed for %s. Run `changesync check --fix`.",
            route.collection,
            ", ".join(pre_image_needs(route)),
        )


async def _check_routes(database: Database, routes: Sequence[Route], report: Report, *, fix: bool) -> None:
    try:
        missing, existing = await routes_without_images(database, routes)
    except SourceError as exc:
        report.add(FAIL, "collections", f"cannot list collections: {exc.cause}", _detail(exc))
        return
    for route in routes:
        subject = f"route {route.collection}"
        if route not in missing:
            report.add(OK, subject, f"{route.event_type}, flow id at {route.flow_id_path!r}, pre-images on")
            continue
        needs = ", ".join(pre_image_needs(route))
        if not fix:
            report.add(FAIL, subject, f"pre-images are off; needed for {needs} (run `changesync check --fix`)")
            continue
        try:
            await database.enable_images(route.collection, exists=route.collection in existing)
            report.add(OK, subject, "pre-images enabled (fixed)")
        except SourceError as exc:
            report.add(FAIL, subject, f"could not enable pre-images: {exc.cause}", _detail(exc))
