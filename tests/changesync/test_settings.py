import pytest

from changesync.errors import ConfigError
from changesync.routes import DEFAULT_ROUTES
from changesync.settings import env_name, load_settings, redact_uri


def write(tmp_path, text):
    path = tmp_path / "changesync.toml"
    path.write_text(text)
    return path


class TestDefaults:
    def test_defaults_describe_the_flow_editor(self):
        """Without a file, the five flow-editor collections are routed to their event types."""
        settings = load_settings(environ={})
        routes = {route.collection: route for route in settings.routes}
        assert set(routes) == set(DEFAULT_ROUTES)
        assert routes["flowboards"].flow_id_path == "_id"
        assert routes["flowboards"].event_type == "SYNC_CANVAS"
        assert routes["flow_nodes"].flow_id_path == "flowId"
        assert routes["flow_executions"].event_type == "EXECUTION_UPDATE"
        assert routes["flow_logs"].event_type == "LOG_STREAM"
        assert all(route.deny_underscore for route in routes.values())
        assert "nodes.*.data.credentials" in routes["flowboards"].deny
        assert {"visibility": "private"} in routes["flow_logs"].drop_when
        assert all(route.origin_field == "meta.mutationId" for route in routes.values())
        assert settings.route_options["flow_logs"].snapshot == "log"

    def test_an_empty_origin_field_reads_no_origin(self, tmp_path):
        """``origin_field = ""`` turns origins off: the field is then published like any other."""
        settings = load_settings(write(tmp_path, "[filters]\norigin_field = ''\n"), environ={})
        assert all(route.origin_field is None for route in settings.routes)

    def test_scalar_defaults(self):
        """Host, port and heartbeat have the documented defaults."""
        settings = load_settings(environ={})
        assert (settings.host, settings.port, settings.stream.heartbeat_interval_s) == ("127.0.0.1", 8000, 15.0)


class TestPrecedence:
    def test_file_then_environment_then_flags(self, tmp_path):
        """Flags beat the environment, which beats the file, which beats the defaults."""
        path = write(tmp_path, 'port = 9000\ndatabase = "from_file"\nhost = "0.0.0.0"\n[stream]\nretry_ms = 100\n')
        settings = load_settings(
            path,
            environ={"CHANGESYNC_PORT": "9100", "CHANGESYNC_DATABASE": "from_env"},
            overrides={"port": 9200, "database": None},
        )
        assert settings.port == 9200
        assert settings.database == "from_env"
        assert settings.host == "0.0.0.0"
        assert settings.stream.retry_ms == 100

    def test_config_path_from_environment(self, tmp_path):
        """CHANGESYNC_CONFIG names the file when no path is given."""
        path = write(tmp_path, 'database = "named"\n')
        assert load_settings(environ={"CHANGESYNC_CONFIG": str(path)}).database == "named"

    def test_environment_name_of_nested_key(self):
        """Nested keys map to upper-case variables with underscores."""
        assert env_name("stream.heartbeat_interval_s") == "CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S"

    def test_environment_sets_nested_key(self):
        """A nested setting can be changed from the environment."""
        settings = load_settings(environ={"CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S": "2.5"})
        assert settings.stream.heartbeat_interval_s == 2.5


class TestErrors:
    @pytest.mark.parametrize(
        ("environ", "key"),
        [
            ({"CHANGESYNC_PORT": "eighty"}, "CHANGESYNC_PORT"),
            ({"CHANGESYNC_PORT": "70000"}, "CHANGESYNC_PORT"),
            ({"CHANGESYNC_MONGODB_URI": "http://x"}, "CHANGESYNC_MONGODB_URI"),
            ({"CHANGESYNC_DATABASE": "a/b"}, "CHANGESYNC_DATABASE"),
            ({"CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S": "-1"}, "CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S"),
            ({"CHANGESYNC_LOG_LEVEL": "LOUD"}, "CHANGESYNC_LOG_LEVEL"),
            ({"CHANGESYNC_PROT": "1"}, "CHANGESYNC_PROT"),
        ],
    )
    def test_bad_environment_names_the_variable(self, environ, key):
        """A bad or unknown variable fails with its name in the error."""
        with pytest.raises(ConfigError) as caught:
            load_settings(environ=environ)
        assert caught.value.key == key
        assert key in str(caught.value)

    @pytest.mark.parametrize(
        ("text", "key"),
        [
            ("port = true\n", "port"),
            ("[stream]\nclient_queue_size = 0\n", "stream.client_queue_size"),
            ("[stream]\nunknown = 1\n", "stream.unknown"),
            ("colour = 'blue'\n", "colour"),
            ("[routes.x]\nevent_type = 'lower'\n", "routes.x.event_type"),
            ("[routes.x]\nevent_type = 'X'\nflow_id = ''\n", "routes.x.flow_id"),
            ("[routes.x]\nevent_type = 'X'\ndeny = 'secrets'\n", "routes.x.deny"),
            ("[routes.x]\nevent_type = 'X'\nstages = ['not a path']\n", "routes.x.stages"),
            ("[routes.x]\nevent_type = 'X'\nfilter = 1\n", "routes.x.filter"),
            (
                "[routes.a]\nevent_type = 'X'\ncollection = 'c'\n[routes.b]\nevent_type = 'Y'\ncollection = 'c'\n",
                "routes.b.collection",
            ),
            ("[filters]\ndrop_when = 'private'\n", "filters.drop_when"),
            ("[filters]\norigin_field = 'meta..id'\n", "filters.origin_field"),
            ("[filters]\norigin_field = 7\n", "filters.origin_field"),
            ("[routes.x]\nevent_type = 'X'\nsnapshot = 'logs'\n", "routes.x.snapshot"),
            ("[routes.x]\nevent_type = 'X'\nsnapshot = 'log'\nlog_text = ''\n", "routes.x.log_text"),
            ("[routes.x]\nevent_type = 'X'\nlog_node = '$where'\n", "routes.x.log_node"),
            ("[routes.x]\nevent_type = 'X'\nlog_tail_bytes = 0\n", "routes.x.log_tail_bytes"),
        ],
    )
    def test_bad_file_names_the_key(self, tmp_path, text, key):
        """A bad value in the file fails with its dotted key."""
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, text), environ={})
        assert caught.value.key == key

    def test_invalid_toml(self, tmp_path):
        """A file that is not TOML is reported with its path."""
        path = write(tmp_path, "port = = 1")
        with pytest.raises(ConfigError, match="valid TOML"):
            load_settings(path, environ={})

    def test_missing_file(self, tmp_path):
        """A config path that does not exist is an error, not silently ignored."""
        with pytest.raises(ConfigError, match="existing TOML file"):
            load_settings(tmp_path / "absent.toml", environ={})

    def test_test_variables_are_not_settings(self):
        """Variables of the test suite do not trip the unknown-variable check."""
        load_settings(environ={"CHANGESYNC_TEST_BACKEND": "uri"})

    def test_unimportable_stage(self, tmp_path):
        """A user stage that cannot be imported fails when the settings are loaded, naming it."""
        with pytest.raises(ConfigError, match="no_such_module:stage"):
            load_settings(
                write(tmp_path, "[routes.x]\nevent_type = 'X'\nstages = ['no_such_module:stage']\n"), environ={}
            )

    @pytest.mark.parametrize(
        ("environ", "text", "suggestion"),
        [
            ({"CHANGESYNC_DATABSE": "x"}, "", "did you mean CHANGESYNC_DATABASE?"),
            ({"CHANGESYNC_STREAM_HEARTBEAT_INTERVAL": "1"}, "", "did you mean CHANGESYNC_STREAM_HEARTBEAT_INTERVAL_S"),
            ({}, "[stream]\nretry = 1\n", "did you mean stream.retry_ms?"),
            ({}, "[routes.x]\nevent_type = 'X'\nflowid = 'a'\n", "did you mean flow_id?"),
        ],
    )
    def test_unknown_names_get_the_closest_known_ones(self, tmp_path, environ, text, suggestion):
        """A misspelt variable, key or route key is answered with the names it was probably meant to be."""
        with pytest.raises(ConfigError) as caught:
            load_settings(write(tmp_path, text) if text else None, environ=environ)
        assert suggestion in str(caught.value)
        assert "CHANGESYNC_CORS_ALLOW_ORIGINS" not in str(caught.value), "not a dump of every known name"

    def test_a_flag_is_named_as_declared(self):
        """An invalid value given as a flag names that flag (``--log-level``, not ``--level``)."""
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={}, overrides={"log.level": "LOUD"})
        assert caught.value.key == "--log-level"

    def test_serving_needs_a_key_or_an_explicit_no(self):
        """The service does not start in jwt mode without a key; the same settings serve other commands."""
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={}, serving=True)
        assert caught.value.key == "auth.jwt_secret" and "CHANGESYNC_AUTH_MODE=none" in str(caught.value)
        assert load_settings(environ={"CHANGESYNC_AUTH_MODE": "none"}, serving=True).auth.mode == "none"
        load_settings(environ={})

    def test_a_configured_key_file_is_checked_even_when_not_serving(self, tmp_path):
        """A key file that cannot be read fails when the settings are loaded, naming its setting."""
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={"CHANGESYNC_AUTH_JWKS_FILE": str(tmp_path / "absent.json")})
        assert caught.value.key == "auth.jwks_file"


class TestRoutes:
    def test_file_routes_replace_defaults_and_inherit_shared_filters(self, tmp_path):
        """Routes in the file replace the defaults; [filters] applies to each of them."""
        path = write(
            tmp_path,
            "[filters]\ndeny = ['token']\ndrop_when = [{archived = true}]\n"
            "[routes.boards]\nevent_type = 'BOARD'\nflow_id = 'boardId'\ndeny = ['notes']\nallow = ['title']\n",
        )
        (route,) = load_settings(path, environ={}).routes
        assert route.collection == "boards"
        assert route.deny == ("token", "notes")
        assert route.drop_when == ({"archived": True},)
        assert route.allow == ("title",)
        assert route.flow_id_path == "boardId"


class TestSecrets:
    def test_password_is_redacted(self):
        """The URI's password never appears in reprs or the redacted form."""
        settings = load_settings(environ={"CHANGESYNC_MONGODB_URI": "mongodb://user:hunter2@db:27017/?replicaSet=rs0"})
        assert "hunter2" not in repr(settings)
        assert "hunter2" not in settings.redacted_uri
        assert redact_uri("mongodb://db:27017") == "mongodb://db:27017"
