import json
import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from changesync.settings import DECLARATIONS, Settings, env_name, load_settings

# Being added to changesync.settings by the authentication work, with exactly these names; allowed
# here explicitly so that this test does not depend on when that work lands.
AUTH_ENV_NAMES = frozenset(
    {"CHANGESYNC_AUTH_MODE", "CHANGESYNC_AUTH_JWT_SECRET", "CHANGESYNC_AUTH_ISSUER", "CHANGESYNC_AUTH_AUDIENCE"}
)
AUTH_MODES = frozenset({"jwt", "none"})
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
# The Compose Specification's JSON schema, in the shared workspace next to the repository.
COMPOSE_SPEC = Path(__file__).resolve().parents[3] / "shared" / "specs" / "compose" / "compose-spec.json"
KNOWN_ENV_NAMES = {env_name(key) for key in DECLARATIONS} | {"CHANGESYNC_CONFIG"} | AUTH_ENV_NAMES
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, $NAME
INTERPOLATION = re.compile(
    r"\$(?:\{(?P<name>[A-Za-z_]\w*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)
DEFAULT_OPERATORS = {":-", "-"}
MONGO_SERVICE = "mongo"
DEFAULT_SERVICES = frozenset({MONGO_SERVICE, "changesync-init", "changesync"})
HUB_PROFILE = "hub"
HUB_INSTANCES = ("changesync-hub-1", "changesync-hub-2")
VALKEY_SERVICE, VALKEY_PORT = "valkey", 6379
PROXY_SERVICE = "hub-proxy"
HUB_SERVICES = frozenset({VALKEY_SERVICE, *HUB_INSTANCES, PROXY_SERVICE})
NGINX_CONF = REPO_ROOT / "docker" / "nginx-hub.conf"
# The nginx image reads conf.d/*.conf inside its http block; this name replaces its default server.
NGINX_CONF_TARGET = "/etc/nginx/conf.d/default.conf"
# The first nginx release with `resolve` on upstream servers outside NGINX Plus.
NGINX_RESOLVE_SINCE = (1, 27, 3)
# Bound on `docker compose config`, which reads files only.
COMPOSE_CONFIG_TIMEOUT_S = 60
REPLICA_SET_INITIATE = re.compile(r"rs\.initiate\(\s*\{\s*_id:\s*'(?P<set>[^']+)'.*?host:\s*'(?P<host>[^']+)'", re.S)


def interpolations(value: str) -> list[re.Match[str]]:
    return list(INTERPOLATION.finditer(value.replace("$$", "")))


def with_defaults(value: str) -> str:
    """``value`` as Compose interpolates it when no variable is set (``$$`` is a literal ``$``)."""

    def default(match: re.Match[str]) -> str:
        assert match["operator"] in DEFAULT_OPERATORS, f"{value!r}: interpolation without a default"
        return match["argument"]

    return INTERPOLATION.sub(default, value.replace("$$", "\x00")).replace("\x00", "$")


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return []


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with interpolations resolved to their defaults."""
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment should be a mapping"
    return {name: with_defaults(str(value)) for name, value in env.items()}


def service_settings(service: dict[str, Any]) -> Settings:
    """The settings the service's environment gives; the auth variables are checked separately."""
    env = environment(service)
    return load_settings(environ={var: value for var, value in env.items() if var not in AUTH_ENV_NAMES})


def published(spec: str) -> tuple[str | None, int | None, int]:
    """``(host ip, host port, container port)`` of a short-syntax ``ports`` entry."""
    parts = spec.removesuffix("/tcp").split(":")
    host_ip = parts[0] if len(parts) == 3 else None
    host_port = int(parts[-2]) if len(parts) >= 2 else None
    return host_ip, host_port, int(parts[-1])


def healthcheck_paths(test: list[str]) -> list[str]:
    return re.findall(r"""(?:https?://[^/\s'"]+|['"])(/[A-Za-z][\w/.-]*)""", " ".join(test))


class TestComposeFile:
    def test_validates_against_the_compose_specification(self, compose):
        """The file is valid under the Compose Specification's JSON schema."""
        if not COMPOSE_SPEC.is_file():
            pytest.skip(f"Compose Specification schema not found at {COMPOSE_SPEC}")
        schema = json.loads(COMPOSE_SPEC.read_text())
        jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)

    def test_has_no_version_key(self, compose):
        """The obsolete top-level `version` key is absent (Compose ignores it and warns)."""
        assert "version" not in compose

    def test_every_dependency_waits_for_a_condition(self, services):
        """Every depends_on entry names a condition, so no service starts against an unready one."""
        for name, service in services.items():
            depends_on = service.get("depends_on", {})
            assert isinstance(depends_on, dict), f"{name}: depends_on should map services to conditions"
            for dependency, options in depends_on.items():
                assert dependency in services, f"{name} depends on unknown service {dependency}"
                assert options.get("condition") in {"service_healthy", "service_completed_successfully"}, name

    def test_interpolations_all_have_defaults(self, compose):
        """Every ${VAR} has a default: Compose interpolates services of inactive profiles too, so
        a required ${VAR:?} would break a plain `docker compose up`."""
        for text in strings(compose):
            for match in interpolations(text):
                assert match["operator"] in DEFAULT_OPERATORS, f"{text!r}: {match[0]} has no default"

    def test_mongo_is_published_on_loopback_only(self, services):
        """MongoDB runs without authentication, so its port is bound to 127.0.0.1 only."""
        assert [published(spec) for spec in services[MONGO_SERVICE]["ports"]] == [("127.0.0.1", 27017, 27017)]

    def test_mongo_data_lives_in_a_named_volume(self, compose, services):
        """/data/db is a named volume, so the data and the replica-set configuration survive restarts."""
        volume, _, target = services[MONGO_SERVICE]["volumes"][0].partition(":")
        assert target == "/data/db"
        assert volume in compose["volumes"]

    def test_mongo_healthcheck_initiates_the_replica_set_of_the_uri(self, services, image_services):
        """The healthcheck initiates the replica set named by --replSet and by every changesync URI,
        with the member host that the URI reaches (the mongo service's name)."""
        mongo = services[MONGO_SERVICE]
        command = mongo["command"]
        replica_set = command[command.index("--replSet") + 1]
        script = mongo["healthcheck"]["test"][-1]
        initiate = REPLICA_SET_INITIATE.search(script)
        assert initiate is not None, script
        assert initiate["set"] == replica_set == "rs0"
        for name, service in image_services.items():
            uri = urllib.parse.urlsplit(environment(service)["CHANGESYNC_MONGODB_URI"])
            assert urllib.parse.parse_qs(uri.query)["replicaSet"] == [replica_set], name
            assert uri.netloc == initiate["host"], f"{name} reaches {uri.netloc}, the member is {initiate['host']}"
        assert initiate["host"].partition(":")[0] == MONGO_SERVICE

    def test_mongo_is_healthy_only_as_writable_primary(self, services):
        """The mongo healthcheck passes only once the node is a writable primary."""
        test = services[MONGO_SERVICE]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "mongosh"]
        assert "quit(db.hello().isWritablePrimary ? 0 : 1)" in test[-1]

    def test_image_services_use_known_settings(self, image_services):
        """Every CHANGESYNC_* variable given to the image is one that changesync knows."""
        for name, service in image_services.items():
            unknown = {var for var in environment(service) if var.startswith("CHANGESYNC_")} - KNOWN_ENV_NAMES
            assert not unknown, f"{name}: unknown settings {sorted(unknown)}"

    def test_image_service_values_pass_the_settings_validators(self, image_services):
        """The settings given to the image load as changesync loads them; auth modes are jwt or none."""
        for name, service in image_services.items():
            service_settings(service)
            env = environment(service)
            if "CHANGESYNC_AUTH_MODE" in env:
                assert env["CHANGESYNC_AUTH_MODE"] in AUTH_MODES, name

    def test_changesync_publishes_the_default_port_on_all_interfaces(self, services):
        """The service listens on 0.0.0.0 inside the container, on the default port, published as 8000."""
        service = services["changesync"]
        settings = service_settings(service)
        assert settings.host == "0.0.0.0"
        assert settings.port == Settings().port == 8000
        assert [published(spec)[1:] for spec in service["ports"]] == [(8000, 8000)]

    def test_healthchecks_hit_paths_of_the_app(self, image_services, app_paths):
        """The services' healthchecks request /healthz on the container's port, a route of the app."""
        for name, service in image_services.items():
            if "healthcheck" not in service:
                continue
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD", name
            assert healthcheck_paths(test) == ["/healthz"], name
            assert "/healthz" in app_paths
            assert f"127.0.0.1:{Settings().port}/" in test[-1], name

    def test_changesync_is_built_from_the_dockerfile(self, image_services):
        """The image services build docker/Dockerfile from the repository root, under one image name."""
        assert {service["image"] for service in image_services.values()} == {"changesync:local"}
        for service in image_services.values():
            assert service["build"]["context"] == "."
            assert REPO_ROOT / service["build"]["dockerfile"] == DOCKERFILE

    def test_changesync_waits_for_mongo_and_the_init_job(self, services):
        """changesync starts after mongo is healthy and `check --fix` has completed."""
        assert services["changesync"]["depends_on"] == {
            "mongo": {"condition": "service_healthy"},
            "changesync-init": {"condition": "service_completed_successfully"},
        }
        assert services["changesync"]["restart"] == "unless-stopped"

    def test_init_runs_check_fix_once_mongo_is_healthy(self, services, cli_help):
        """changesync-init runs `changesync check --fix`, a command and option the CLI offers."""
        init = services["changesync-init"]
        assert init["command"] == ["check", "--fix"]
        assert "--fix" in cli_help("check")
        assert init["depends_on"] == {"mongo": {"condition": "service_healthy"}}
        assert init["restart"] == "no"

    def test_default_service_turns_auth_off_only_by_overridable_default(self, services):
        """The no-profile service defaults to CHANGESYNC_AUTH_MODE=none, overridable from the shell."""
        service = services["changesync"]
        assert "profiles" not in service
        assert service["environment"]["CHANGESYNC_AUTH_MODE"] == "${CHANGESYNC_AUTH_MODE:-none}"

    def test_auth_profile_runs_with_jwt_on_port_8001(self, services):
        """The `auth` profile's service requires JWTs, takes the secret from CHANGESYNC_AUTH_JWT_SECRET,
        and is published on 8001."""
        service = services["changesync-auth"]
        assert service["profiles"] == ["auth"]
        env = service["environment"]
        assert env["CHANGESYNC_AUTH_MODE"] == "jwt"
        assert [match["name"] for match in interpolations(env["CHANGESYNC_AUTH_JWT_SECRET"])] == [
            "CHANGESYNC_AUTH_JWT_SECRET"
        ]
        assert [published(spec)[1:] for spec in service["ports"]] == [(8001, Settings().port)]

    def test_demo_writer_runs_the_script_of_the_image(self, services):
        """The `demo` profile runs docker/demo_writer.py from the image after the service is healthy."""
        writer = services["demo-writer"]
        assert writer["profiles"] == ["demo"]
        assert writer["entrypoint"] == ["python", "/app/demo_writer.py"]
        assert writer["depends_on"]["changesync"] == {"condition": "service_healthy"}
        assert set(environment(writer)) >= {"CHANGESYNC_MONGODB_URI", "CHANGESYNC_DATABASE"}


def image_version(image: str) -> tuple[int, ...]:
    """The leading numbers of an image's tag: ``nginx:1.28-alpine`` gives ``(1, 28)``."""
    match = re.fullmatch(r"[\w./-]+:(?P<version>\d+(?:\.\d+)*)(?:-[\w.]+)?", image)
    assert match is not None, f"{image}: the tag should start with a version number"
    return tuple(int(part) for part in match["version"].split("."))


def option_value(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


class TestHubProfile:
    def test_profile_runs_valkey_two_instances_and_a_proxy(self, services):
        """The `hub` profile holds Valkey, two changesync instances and the nginx proxy, and only those."""
        in_profile = {name for name, service in services.items() if HUB_PROFILE in service.get("profiles", [])}
        assert in_profile == HUB_SERVICES
        assert all(services[name]["profiles"] == [HUB_PROFILE] for name in HUB_SERVICES)

    def test_plain_up_starts_the_default_stack_only(self, services):
        """The services without a profile, all that a plain `docker compose up` starts, are the default stack."""
        assert {name for name, service in services.items() if "profiles" not in service} == DEFAULT_SERVICES

    def test_instances_are_one_deployment(self, services):
        """Both instances run `serve` from the one image, with the same settings: the hub URL of the valkey
        service, and the MongoDB, database and auth convention of the default service."""
        default = services["changesync"]
        loaded = []
        for name in HUB_INSTANCES:
            service = services[name]
            assert service["image"] == default["image"], name
            assert service["command"] == ["serve"], name
            env = environment(service)
            for var in ("CHANGESYNC_MONGODB_URI", "CHANGESYNC_DATABASE", "CHANGESYNC_HOST"):
                assert env[var] == environment(default)[var], f"{name}: {var}"
            assert service["environment"]["CHANGESYNC_AUTH_MODE"] == default["environment"]["CHANGESYNC_AUTH_MODE"]
            loaded.append(service_settings(service))
        assert loaded[0] == loaded[1]
        hub = urllib.parse.urlsplit(loaded[0].hub.url)
        assert (hub.scheme, hub.hostname, hub.port, hub.path) == ("redis", VALKEY_SERVICE, VALKEY_PORT, "/0")

    def test_instances_wait_for_mongo_the_init_job_and_valkey(self, services):
        """Each instance starts once MongoDB and Valkey are healthy and `check --fix` has run, has the
        default service's healthcheck, restarts unless stopped, and is reached through the proxy only."""
        for name in HUB_INSTANCES:
            service = services[name]
            assert service["depends_on"] == {
                MONGO_SERVICE: {"condition": "service_healthy"},
                "changesync-init": {"condition": "service_completed_successfully"},
                VALKEY_SERVICE: {"condition": "service_healthy"},
            }, name
            assert service["healthcheck"] == services["changesync"]["healthcheck"], name
            assert service["restart"] == "unless-stopped", name
            assert "ports" not in service, f"{name} should be reached through {PROXY_SERVICE}"

    def test_valkey_is_pinned_checked_with_ping_and_keeps_nothing_on_disk(self, services):
        """Valkey's image is pinned to a major version, its healthcheck is `valkey-cli ping`, it writes no
        snapshot and no append-only file, and its port is not published."""
        valkey = services[VALKEY_SERVICE]
        assert valkey["image"].startswith("valkey/valkey:")
        assert image_version(valkey["image"])[0] >= 8
        assert valkey["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]
        command = valkey["command"]
        assert command[0] == "valkey-server"
        assert option_value(command, "--save") == ""
        assert option_value(command, "--appendonly") == "no"
        assert "volumes" not in valkey
        assert "ports" not in valkey

    def test_proxy_runs_nginx_with_the_conf_mounted_read_only(self, services):
        """hub-proxy runs an nginx that knows `resolve`, with docker/nginx-hub.conf mounted read-only as its
        server, after both instances are healthy; it is published on 127.0.0.1:8002."""
        proxy = services[PROXY_SERVICE]
        assert proxy["image"].startswith("nginx:")
        assert image_version(proxy["image"]) >= NGINX_RESOLVE_SINCE
        (volume,) = proxy["volumes"]
        source, target, mode = volume.split(":")
        assert (REPO_ROOT / source).resolve() == NGINX_CONF
        assert (target, mode) == (NGINX_CONF_TARGET, "ro")
        assert proxy["depends_on"] == {name: {"condition": "service_healthy"} for name in HUB_INSTANCES}
        assert [published(spec) for spec in proxy["ports"]] == [("127.0.0.1", 8002, 80)]

    def test_published_ports_are_on_loopback_and_distinct(self, services):
        """Every service publishes on 127.0.0.1 only, and no two services publish the same host port."""
        host_ports = []
        for name, service in services.items():
            for spec in service.get("ports", []):
                host_ip, host_port, _ = published(spec)
                assert host_ip == "127.0.0.1", f"{name} publishes {spec}"
                host_ports.append(host_port)
        assert len(host_ports) == len(set(host_ports)), host_ports

    def test_docker_compose_accepts_every_profile(self, compose, compose_cli):
        """`docker compose config` accepts the file with every profile on (where the Compose CLI is installed)."""
        profiles = sorted(
            {profile for service in compose["services"].values() for profile in service.get("profiles", [])}
        )
        command = [*compose_cli, "--file", str(REPO_ROOT / "docker-compose.yml")]
        command += [word for profile in profiles for word in ("--profile", profile)]
        result = subprocess.run(
            [*command, "config", "--quiet"], capture_output=True, text=True, timeout=COMPOSE_CONFIG_TIMEOUT_S
        )
        assert result.returncode == 0, result.stderr
