"""``changesync check``: can this deployment serve our change stream, and are the routes set up?"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from filters import Route

from .settings import Settings
from .source import Client, open_client, watch_pipeline

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(slots=True)
class Finding:
    status: str
    subject: str
    message: str


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, status: str, subject: str, message: str) -> None:
        self.findings.append(Finding(status, subject, message))

    @property
    def failed(self) -> bool:
        return any(finding.status == FAIL for finding in self.findings)

    def render(self) -> str:
        width = max((len(finding.subject) for finding in self.findings), default=0)
        lines = [f"[{f.status.upper():4}] {f.subject.ljust(width)}  {f.message}" for f in self.findings]
        lines.append("result: " + ("problems found" if self.failed else "ready"))
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
    client = open_client(settings.mongodb_uri, server_selection_timeout_ms=5_000)
    try:
        return await _check(client, settings, fix=fix)
    finally:
        await client.close()


async def _check(client: Client, settings: Settings, *, fix: bool) -> Report:
    report = Report()
    try:
        hello = await client.admin.command("hello")
    except PyMongoError as exc:
        report.add(FAIL, "connection", f"cannot reach {settings.redacted_uri}: {type(exc).__name__}: {exc}")
        return report
    if hello.get("setName"):
        report.add(OK, "deployment", f"replica set {hello['setName']!r}, primary {hello.get('primary', '?')}")
    elif hello.get("msg") == "isdbgrid":
        report.add(OK, "deployment", "sharded cluster (mongos)")
    else:
        report.add(FAIL, "deployment", "standalone server: change streams need a replica set (even a single node)")
        return report
    try:
        version = (await client.admin.command("buildInfo")).get("version", "?")
        report.add(OK, "server", f"version {version}")
    except PyMongoError:
        report.add(WARN, "server", "buildInfo not permitted; version unknown")

    database = client[settings.database]
    try:
        stream = await database.watch(watch_pipeline(settings.routes), full_document_before_change="whenAvailable")
        await stream.close()
        report.add(OK, "change stream", f"opened on database {settings.database!r}")
    except PyMongoError as exc:
        report.add(FAIL, "change stream", f"cannot open on {settings.database!r}: {exc}")
        return report

    await _check_routes(database, settings.routes, report, fix=fix)
    return report


async def routes_without_images(database: Any, routes: Sequence[Route]) -> tuple[list[Route], set[str]]:
    """Routes whose collection has pre-/post-images off, and the names of existing collections."""
    options = {info["name"]: info.get("options", {}) async for info in await database.list_collections()}
    missing = [
        route
        for route in routes
        if not options.get(route.collection, {}).get("changeStreamPreAndPostImages", {}).get("enabled", False)
    ]
    return missing, set(options)


async def warn_about_images(database: Any, routes: Sequence[Route]) -> None:
    """Log, at start-up, every route that runs degraded because pre-images are off."""
    try:
        missing, _ = await routes_without_images(database, routes)
    except PyMongoError as exc:
        logger.warning("could not inspect collection options (%s); run `changesync check`", type(exc).__name__)
        return
    for route in missing:
        logger.warning(
            "route %s: pre-images are off; needed for %s. Run `changesync check --fix`.",
            route.collection,
            ", ".join(pre_image_needs(route)),
        )


async def _check_routes(database: Any, routes: Sequence[Route], report: Report, *, fix: bool) -> None:
    try:
        missing, existing = await routes_without_images(database, routes)
    except PyMongoError as exc:
        report.add(FAIL, "collections", f"cannot list collections: {exc}")
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
            if route.collection in existing:
                await database.command("collMod", route.collection, changeStreamPreAndPostImages={"enabled": True})
            else:
                await database.create_collection(route.collection, changeStreamPreAndPostImages={"enabled": True})
            report.add(OK, subject, "pre-images enabled (fixed)")
        except OperationFailure as exc:
            report.add(FAIL, subject, f"could not enable pre-images: {exc.details or exc}")
