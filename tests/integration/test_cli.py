"""The ``changesync`` command as an operator runs it: a real process, real output, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import pytest
from bson import json_util

from harness import EventStream, free_port

COMMAND = [sys.executable, "-m", "changesync"]


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

    def test_unreachable_server(self):
        """A server that does not answer is a failed check, not a hang or a traceback."""
        result = run("check", "--mongodb-uri", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
        assert result.returncode == 1
        assert "[FAIL] connection" in result.stdout
        assert "Traceback" not in result.stderr


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
