import re
import shlex
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from changesync.settings import DECLARATIONS, Settings, env_name, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
CONSTRAINTS = REPO_ROOT / "docker" / "constraints.txt"
# Instructions of the final stage that would mean it installs or compiles something.
BUILD_TOOLS = re.compile(r"\b(pip|apt-get|apt|gcc|cc|make|uv)\b")
DEMO_EXTRA = re.compile(r"\[[^\]]*\bdemo\b|secantus", re.I)


def arguments(instructions: list[Any], keyword: str) -> list[Any]:
    return [instruction for instruction in instructions if instruction.keyword == keyword]


def env_values(instructions: list[Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in arguments(instructions, "ENV"):
        for pair in shlex.split(instruction.arguments):
            name, _, value = pair.partition("=")
            values[name] = value
    return values


def copy_sources(instruction: Any) -> list[str]:
    """The build-context paths a COPY reads (none for ``COPY --from=stage``)."""
    words = shlex.split(instruction.arguments)
    if any(word.startswith("--from=") for word in words):
        return []
    return [word for word in words[:-1] if not word.startswith("--")]


def constraint_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.partition("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def allow_listed(path: str, patterns: list[str]) -> bool:
    """Whether an allow-list ``.dockerignore`` (``*`` then ``!path`` lines) keeps ``path`` in the context."""
    parts = path.strip("/").split("/")
    kept = {pattern[1:].strip("/") for pattern in patterns if pattern.startswith("!")}
    return any("/".join(parts[:length]) in kept for length in range(1, len(parts) + 1))


class TestDockerfile:
    def test_base_images_are_pinned(self, dockerfile):
        """Every FROM names a tagged image (or an earlier stage), never `latest`."""
        stages: set[str] = set()
        for instruction in arguments(dockerfile, "FROM"):
            image, _, alias = instruction.arguments.partition(" AS ")
            if image not in stages:
                assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", image), image
                assert not image.partition("@")[0].endswith(":latest"), image
            stages.add(alias.strip())

    def test_final_stage_runs_on_the_builders_base_image(self, dockerfile):
        """Both stages use the same Python image, since the copied virtualenv links to its interpreter."""
        images = [instruction.arguments.partition(" ")[0] for instruction in arguments(dockerfile, "FROM")]
        assert len(images) == 2
        assert images[0] == images[1] == "python:3.11-slim-bookworm"

    def test_final_stage_has_no_build_tools(self, final_stage):
        """The final stage copies the built virtualenv and runs no installer or compiler."""
        for instruction in arguments(final_stage, "RUN"):
            assert not BUILD_TOOLS.search(instruction.arguments), instruction.arguments
        assert any("--from=builder /opt/venv /opt/venv" in i.arguments for i in arguments(final_stage, "COPY"))

    def test_pyproject_is_copied_and_installed_before_the_source(self, dockerfile):
        """Dependencies install from pyproject.toml before the source is copied, for layer caching."""
        copies = arguments(dockerfile, "COPY")
        pyproject = next(i.line for i in copies if "pyproject.toml" in copy_sources(i))
        source = min(i.line for i in copies if {"changesync", "filters"} & set(copy_sources(i)))
        installs = [i.line for i in arguments(dockerfile, "RUN") if "--requirement" in i.arguments]
        assert pyproject < installs[0] < source

    def test_does_not_install_the_demo_extra(self, dockerfile):
        """Neither the demo extra nor SecantusDB (GPL-2.0) goes into the image."""
        for instruction in dockerfile:
            assert not DEMO_EXTRA.search(instruction.arguments), f"line {instruction.line}: {instruction.arguments}"
        assert "secantusdb" not in constraint_pins()

    def test_entrypoint_is_the_console_script(self, final_stage, pyproject):
        """ENTRYPOINT runs the `changesync` script that pyproject declares."""
        scripts = pyproject["project"]["scripts"]
        (entrypoint,) = arguments(final_stage, "ENTRYPOINT")
        assert entrypoint.exec_form() == ["changesync"]
        assert scripts["changesync"] == "changesync.cli:main"

    def test_cmd_is_a_subcommand_of_the_cli(self, final_stage, cli_help):
        """CMD is `serve`, one of the subcommands `changesync --help` lists."""
        (cmd,) = arguments(final_stage, "CMD")
        listed = set(re.findall(r"^ {4}(\w+) ", cli_help(), re.M))
        assert cmd.exec_form() == ["serve"]
        assert "serve" in listed

    def test_runs_as_a_non_root_user(self, final_stage):
        """The final stage switches to a numeric, non-zero user id."""
        users = arguments(final_stage, "USER")
        assert users
        user, _, group = users[-1].arguments.partition(":")
        assert user.isdigit() and int(user) != 0
        assert group != "0"

    def test_healthcheck_requests_healthz_with_urllib(self, final_stage, app_paths):
        """HEALTHCHECK requests /healthz, a route of the app, with Python's urllib (no curl in slim)."""
        (healthcheck,) = arguments(final_stage, "HEALTHCHECK")
        options, _, command = healthcheck.arguments.partition("CMD ")
        assert "--interval=" in options
        assert "urllib.request.urlopen" in command
        paths = re.findall(r"""['"](/[A-Za-z][\w/.-]*)['"]""", command)
        assert paths == ["/healthz"]
        assert "/healthz" in app_paths

    def test_exposes_the_default_port(self, final_stage):
        """EXPOSE names the port changesync listens on by default."""
        (expose,) = arguments(final_stage, "EXPOSE")
        assert expose.arguments == str(Settings().port) == "8000"

    def test_environment(self, final_stage):
        """The image listens on all interfaces, does not write bytecode, does not buffer output,
        and sets no config file path (a missing file is a start-up error)."""
        env = env_values(final_stage)
        assert env["CHANGESYNC_HOST"] == "0.0.0.0"
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert "CHANGESYNC_CONFIG" not in env

    def test_changesync_variables_are_valid_settings(self, final_stage):
        """The image's CHANGESYNC_* variables are settings changesync knows, with valid values."""
        known = {env_name(key) for key in DECLARATIONS}
        env = env_values(final_stage)
        settings_env = {name: value for name, value in env.items() if name.startswith("CHANGESYNC_")}
        assert set(settings_env) <= known
        assert load_settings(environ=settings_env).host == "0.0.0.0"

    def test_copies_only_files_in_the_build_context(self, dockerfile):
        """Every file COPY reads exists and is allow-listed by .dockerignore."""
        patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
        assert patterns[patterns.index("*") + 1 :], ".dockerignore should start from `*` and allow-list"
        for instruction in arguments(dockerfile, "COPY"):
            for source in copy_sources(instruction):
                assert (REPO_ROOT / source).exists(), source
                assert allow_listed(source, patterns), f"{source} is excluded by .dockerignore"

    def test_demo_writer_is_copied_where_compose_runs_it(self, final_stage, services):
        """The script that the demo profile's entrypoint runs is copied into the image at that path."""
        entrypoint = services["demo-writer"]["entrypoint"]
        copies = {shlex.split(i.arguments)[-1]: copy_sources(i) for i in arguments(final_stage, "COPY")}
        assert copies[entrypoint[-1]] == ["docker/demo_writer.py"]


class TestConstraints:
    def test_every_dependency_is_pinned_within_its_range(self, pyproject):
        """docker/constraints.txt pins each [project] dependency to a version pyproject allows."""
        pins = constraint_pins()
        for text in pyproject["project"]["dependencies"]:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
            assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
