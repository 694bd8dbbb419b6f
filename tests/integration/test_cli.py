"""The ``changesync`` command as an operator runs it: a real process, real output, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from bson import json_util

from harness import EventStream, free_port

COMMAND = [sys.executable, "-m", "changesync"]
SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "change-events.jsonl"


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
    environ.update(env or {})
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=environ, input=stdin, timeout=60)


class TestCheck:
    def test_reports_missing_images_then_fixes_them(self, mongo_backend, database_name):
        """check fails while pre-images are off, --fix enables them, and check then passes."""
        common = ["--mongodb-uri", mongo_backend.uri, "--database", database_name]
        before = run("check", *common)
        assert before.returncode == 1, before.stdout + before.stderr
        assert "[OK  ] deployment" in before.stdout
        assert re.search(
            r"\[FAIL\] route flow_nodes\s+pre-images are off; needed for .*routing deletes by flowId", before.stdout
        )
        fixed = run("check", "--fix", *common)
        assert fixed.returncode == 0, fixed.stdout
        after = run("check", *common)
        assert after.returncode == 0, after.stdout
        assert "result: ready" in after.stdout

    # Two checks, each waiting out check's 5 s server selection.
    @pytest.mark.timeout(30)
    def test_unreachable_server(self):
        """A server that does not answer is a failed check with one line of cause, not a hang or a
        traceback; the driver's account of it comes with --verbose only."""
        uri = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
        result = run("check", "--mongodb-uri", uri)
        assert result.returncode == 1
        (failure,) = [line for line in result.stdout.splitlines() if line.startswith("[FAIL]")]
        assert failure.startswith(f"[FAIL] connection  cannot reach {uri}: 127.0.0.1:")
        assert "Topology Description" not in result.stdout and "--verbose" in result.stdout
        assert "Traceback" not in result.stderr
        verbose = run("check", "--verbose", "--mongodb-uri", uri)
        assert "ServerSelectionTimeoutError" in verbose.stdout and "Topology Description" in verbose.stdout


class TestServe:
    async def test_an_unreachable_database_is_said_at_once_naming_it(self):
        """serve without a reachable MongoDB says within seconds which URI it tries, why it fails, and
        to run `changesync check`; /readyz says the same; the service keeps serving meanwhile."""
        port, uri = free_port(), f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
        environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
        environ.update(CHANGESYNC_AUTH_MODE="none", CHANGESYNC_LOG_FORMAT="text")
        process = await asyncio.create_subprocess_exec(
            *COMMAND, "serve", "--mongodb-uri", uri, "--port", str(port),
            env=environ, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            said = []
            async with asyncio.timeout(6):  # a 2 s probe; the driver's own attempt would take 10 s
                while not said:
                    line = (await process.stderr.readline()).decode()
                    assert line, "serve exited"
                    if "cannot reach" in line:
                        said.append(line)
            assert uri in said[0] and "Connect call failed" in said[0] and "changesync check" in said[0]
            async with httpx.AsyncClient() as client, asyncio.timeout(6):
                while True:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/readyz")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
            body = response.json()
            assert response.status_code == 503 and body["status"] == "not-ready"
            assert "Connect call failed" in body["lastError"] and uri in body["mongodb"]
            assert "changesync check" in body["hint"]
        finally:
            process.terminate()
            async with asyncio.timeout(8):
                await process.wait()


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("args", "env", "message"),
        [
            (["--port", "99999"], {}, "--port: expected an integer from 0 to 65535, got 99999"),
            (["--log-level", "LOUD"], {}, "--log-level: expected one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"),
            ([], {"CHANGESYNC_PORT": "x"}, "CHANGESYNC_PORT: expected an integer"),
            (
                [],
                {"CHANGESYNC_DATABSE": "x"},
                "CHANGESYNC_DATABSE: expected a known variable; did you mean CHANGESYNC_DATABASE?",
            ),
            (["--config", "/nonexistent.toml"], {}, "config: expected an existing TOML file"),
            (
                [],
                {},
                "auth.jwt_secret: expected a secret (CHANGESYNC_AUTH_JWT_SECRET), a public key file or a JWKS file",
            ),
        ],
    )
    def test_bad_settings_exit_2_naming_the_key(self, args, env, message):
        """serve refuses bad settings with exit code 2 and a message naming the key, before it starts."""
        result = run("serve", *args, env=env)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr

    def test_bad_filter_rule_in_file(self, tmp_path):
        """A route with an invalid rule is rejected at start-up."""
        config = tmp_path / "c.toml"
        config.write_text("[routes.x]\nevent_type = 'X'\ndrop_when = [{status = {'$regex' = 'a'}}]\n")
        result = run("preview", "--config", str(config), "-", stdin="")
        assert result.returncode == 2
        assert "routes" in result.stderr


class TestPreview:
    def test_prints_messages_drops_and_bad_lines(self, tmp_path):
        """preview shows the SSE message per event, why others are dropped, and reports malformed lines by number."""
        events = [
            {
                "_id": {"_data": "8201"},
                "operationType": "insert",
                "ns": {"db": "d", "coll": "flow_logs"},
                "documentKey": {"_id": 1},
                "fullDocument": {"_id": 1, "flowId": "f1", "chunk": "hi", "_secret": 1},
            },
            {
                "_id": {"_data": "8202"},
                "operationType": "insert",
                "ns": {"db": "d", "coll": "flowboards"},
                "documentKey": {"_id": "f2"},
                "fullDocument": {"_id": "f2", "visibility": "private"},
            },
            {
                "_id": {"_data": "8203"},
                "operationType": "insert",
                "ns": {"db": "d", "coll": "flow_logs"},
                "documentKey": {"_id": 3},
                "fullDocument": {"_id": 3, "chunk": "no flow id"},
            },
        ]
        lines = [
            json_util.dumps(events[0]),
            "{not json",
            json_util.dumps(events[1]),
            "",
            json_util.dumps(events[2]),
            "[1]",
        ]
        path = tmp_path / "events.jsonl"
        path.write_text("\n".join(lines) + "\n")
        result = run("preview", str(path))
        assert result.returncode == 1
        blocks = result.stdout.strip().split("\n\n")
        assert blocks[0].startswith("event: LOG_STREAM\nid: ")
        data = json.loads(blocks[0].split("data: ", 1)[1])
        assert data["document"] == {"_id": 1, "flowId": "f1", "chunk": "hi"}
        assert blocks[1].startswith("dropped: private")
        assert blocks[2].startswith("dropped: unroutable")
        assert "line 2: not Extended JSON" in result.stderr
        assert "line 6: expected a change event object" in result.stderr

    def test_an_object_that_is_not_a_change_event(self):
        """A JSON object without operationType and _id is called what it is, not a dropped event."""
        result = run("preview", "-", stdin='{"a": 1}\n')
        assert result.returncode == 1
        assert "line 1: not a change event" in result.stderr

    def test_the_shipped_sample(self):
        """The sample in docs/examples gives every kind of answer: the three event types, drops and a resync."""
        result = run("preview", str(SAMPLE))
        assert result.returncode == 0, result.stderr
        for expected in ("event: SYNC_CANVAS", "event: EXECUTION_UPDATE", "event: LOG_STREAM"):
            assert expected in result.stdout
        assert "dropped: private" in result.stdout and "dropped: unroutable" in result.stdout
        assert "resync: every client" in result.stdout
        assert "sk-demo" not in result.stdout and "never-sent" not in result.stdout and "_worker" not in result.stdout


class TestHelp:
    def test_each_command_says_what_it_does(self):
        """changesync --help lists every command with a one-line description."""
        result = run("--help")
        for command in ("serve", "demo", "check", "preview"):
            assert re.search(rf"^\s+{command}\s+\w", result.stdout, re.MULTILINE), command

    @pytest.mark.parametrize(
        ("command", "takes", "not_taken"),
        [
            ("serve", ["--mongodb-uri", "--port", "--log-level"], ["--fix"]),
            ("check", ["--mongodb-uri", "--fix", "--verbose"], ["--port", "--host", "--log-level"]),
            ("preview", ["--config"], ["--mongodb-uri", "--port", "--database"]),
        ],
    )
    def test_a_command_lists_only_its_own_flags(self, command, takes, not_taken):
        """A command's --help shows the flags it takes and none of the others."""
        result = run(command, "--help")
        assert result.returncode == 0
        for flag in takes:
            assert flag in result.stdout, flag
        for flag in not_taken:
            assert flag not in result.stdout, flag


class TestDemo:
    async def test_demo_streams_all_event_types(self):
        """`changesync demo` starts the embedded database, the service and the writer; all three event types flow."""
        port = free_port()
        environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
        process = await asyncio.create_subprocess_exec(
            *COMMAND,
            "demo",
            "--port",
            str(port),
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # an unread pipe would fill up and block the demo
        )
        try:
            url = token = None
            async with asyncio.timeout(30):
                while url is None:
                    line = (await process.stdout.readline()).decode()
                    assert line, "demo exited before printing its URL"
                    if "curl -N " in line:
                        match = re.search(r"curl -N -H 'Authorization: Bearer ([\w.-]+)' (\S+)", line)
                        assert match, f"the demo prints a ready-to-use curl line with a token: {line!r}"
                        token, url = match.groups()
            assert url == f"http://127.0.0.1:{port}/flows/demo-flow/events"
            async with EventStream(url) as anonymous:
                assert anonymous.status_code == 401, "the demo keeps authentication on"
            seen: set[str] = set()
            async with EventStream(url, headers={"Authorization": f"Bearer {token}"}) as stream:
                async with asyncio.timeout(30):
                    while not {"SNAPSHOT", "SYNC_CANVAS", "EXECUTION_UPDATE", "LOG_STREAM"} <= seen:
                        event = await stream.next(30)
                        seen.add(event.event)
                for data in stream.raw:
                    assert "sk-demo" not in data and "never-sent" not in data and "_lastEditor" not in data
        finally:
            process.terminate()
            async with asyncio.timeout(15):
                await process.wait()

    async def test_ctrl_c_stops_the_demo_and_its_database_at_once(self):
        """Ctrl-C in a terminal signals the whole process group: the demo shuts down gracefully within
        seconds (its database must not die first, or closing the driver waits for it), and the
        embedded database goes with it."""
        environ = {key: value for key, value in os.environ.items() if not key.startswith("CHANGESYNC_")}
        process = await asyncio.create_subprocess_exec(
            *COMMAND,
            "demo",
            "--port",
            str(free_port()),
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        try:
            async with asyncio.timeout(30):
                while "demo is running" not in (line := (await process.stdout.readline()).decode()):
                    assert line, "demo exited before it was running"
                while "MongoDB (embedded)" not in (line := (await process.stdout.readline()).decode()):
                    assert line, "demo exited before naming its database"
            database_port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
            os.killpg(process.pid, signal.SIGINT)
            started = time.monotonic()
            async with asyncio.timeout(15):
                await process.wait()
            assert time.monotonic() - started < 5, f"the demo took {time.monotonic() - started:.1f} s to stop"
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", database_port), timeout=1).close()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
