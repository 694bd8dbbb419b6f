import importlib.util
import py_compile
from pathlib import Path
from types import ModuleType

import pytest

from changesync.errors import ConfigError

DEMO_WRITER = Path(__file__).resolve().parents[2] / "docker" / "demo_writer.py"


@pytest.fixture(scope="module")
def demo_writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_writer", DEMO_WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestDemoWriter:
    def test_compiles(self, tmp_path):
        """docker/demo_writer.py exists and compiles."""
        py_compile.compile(str(DEMO_WRITER), cfile=str(tmp_path / "demo_writer.pyc"), doraise=True)

    def test_reads_uri_and_database_from_the_environment(self, demo_writer):
        """The writer takes CHANGESYNC_MONGODB_URI and CHANGESYNC_DATABASE and ignores other variables."""
        environ = {
            "CHANGESYNC_MONGODB_URI": "mongodb://mongo:27017/?replicaSet=rs0",
            "CHANGESYNC_DATABASE": "flow_editor",
            "CHANGESYNC_AUTH_MODE": "none",
            "CHANGESYNC_CONFIG": "/does/not/exist.toml",
        }
        assert demo_writer.read_target(environ) == ("mongodb://mongo:27017/?replicaSet=rs0", "flow_editor")

    def test_rejects_an_invalid_uri(self, demo_writer):
        """A URI that is not mongodb:// is a configuration error, as it is for the service."""
        with pytest.raises(ConfigError, match="CHANGESYNC_MONGODB_URI"):
            demo_writer.read_target({"CHANGESYNC_MONGODB_URI": "http://mongo:27017"})

    def test_configuration_error_exits_with_usage_code(self, demo_writer, monkeypatch, capsys):
        """main() reports a bad setting on stderr and exits 2 without connecting."""
        monkeypatch.setenv("CHANGESYNC_DATABASE", "bad/name")
        assert demo_writer.main() == 2
        assert "CHANGESYNC_DATABASE" in capsys.readouterr().err
