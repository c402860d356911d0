"""The hosting files (Dockerfile, compose.yaml, the systemd unit, the lock file, the pre-commit
hooks) agree with the code and with each other: read as files, no Docker or systemd needed."""

from __future__ import annotations

import configparser
import json
import math
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bot import config
from bot.config import SHARED_STORES, Settings, load_settings
from bot.requests.admission import CANCEL_WAIT

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
UNIT = ROOT / "deploy" / "imagine-bot.service"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
# The extras the lock (and so the image) was compiled with, from the command in its header.
LOCK_COMMAND = next(line for line in LOCK.read_text("utf-8").splitlines() if "pip compile" in line)
IMAGE_EXTRAS = tuple(re.findall(r"--extra (\S+)", LOCK_COMMAND))

# The longest the bot may take to stop after SIGTERM: the drain, then the cancelled requests'
# last word to their members (bot/requests/admission.py). A supervisor must wait longer than this.
GRACE = Settings.model_fields["shutdown_grace_seconds"].default
LONGEST_DRAIN = GRACE + CANCEL_WAIT

SYSTEMD_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
GO_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def systemd_seconds(span: str) -> float:
    """A systemd time span ("90", "90s", "1min 30s", "infinity") in seconds."""
    span = span.strip()
    if span == "infinity":
        return math.inf
    if re.fullmatch(r"\d+(\.\d+)?", span):
        return float(span)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", span)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == span.replace(" ", ""), span
    return sum(float(number) * SYSTEMD_UNITS[unit] for number, unit in parts)


def compose_seconds(duration: str) -> float:
    """A compose duration ("90s", "1m30s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(float(number) * GO_UNITS[unit] for number, unit in parts)


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text("utf-8"))
    return document


def image_services() -> dict[str, dict[str, Any]]:
    """The services that run this repository's image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("build") == "." or str(service.get("image", "")).startswith("imagine-bot")
    }


def bot_services() -> dict[str, dict[str, Any]]:
    """The services that run the bot itself: the image's own command, not a one-off one."""
    return {name: service for name, service in image_services().items() if "command" not in service}


def enabled(profile: str) -> dict[str, dict[str, Any]]:
    """The bots `docker compose --profile PROFILE up` starts: those of the profile and those
    without any (compose always starts a service that names no profile)."""
    return {
        name: service
        for name, service in bot_services().items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def unit() -> configparser.ConfigParser:
    # systemd repeats keys (Environment=, SystemCallFilter=): the last one is kept here.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text("utf-8"))
    return parser


def unit_values(key: str) -> list[str]:
    """Every value a repeated key of the [Service] section takes, in order."""
    return [
        line.split("=", 1)[1].strip()
        for line in UNIT.read_text("utf-8").splitlines()
        if line.startswith(f"{key}=")
    ]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text("utf-8"))
    instructions = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def documented() -> str:
    return (ROOT / ".env.example").read_text("utf-8")


# -- stopping -------------------------------------------------------------------------------------


def test_compose_waits_for_the_drain_before_killing_the_bot() -> None:
    assert bot_services()
    for name, service in bot_services().items():
        assert "stop_grace_period" in service, f"{name} would be killed after Docker's 10 s"
        assert compose_seconds(service["stop_grace_period"]) > LONGEST_DRAIN, name


def test_systemd_waits_for_the_drain_and_stops_the_bot_with_a_signal_it_handles() -> None:
    service = unit()["Service"]
    assert systemd_seconds(service["TimeoutStopSec"]) > LONGEST_DRAIN
    # The bot drains on SIGTERM and SIGINT (tests/bot/test_signals.py); SIGKILL only at the end.
    assert service["KillSignal"] in ("SIGTERM", "SIGINT")
    assert service.get("KillMode", "control-group") in ("control-group", "mixed")


def test_the_image_gives_docker_stop_a_signal_the_bot_handles() -> None:
    signals = [arguments for keyword, arguments in final_stage() if keyword == "STOPSIGNAL"]
    assert signals in ([], ["SIGTERM"], ["SIGINT"])


# -- the image ------------------------------------------------------------------------------------


def test_the_image_runs_the_bot_as_a_user_other_than_root() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "without USER the bot runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_the_image_keeps_its_state_in_a_volume_and_checks_its_health() -> None:
    stage = final_stage()
    env = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    data_dir = re.search(r"\bDATA_DIR=(\S+)", env)
    assert data_dir is not None
    volumes = [arguments for keyword, arguments in stage if keyword == "VOLUME"]
    assert any(data_dir[1] in volume for volume in volumes)
    # The health check asks the metrics server, which is off unless METRICS_PORT is set.
    assert re.search(r"\bMETRICS_PORT=\d+", env)
    health = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and health[0].endswith('CMD ["python", "-m", "bot", "health"]')
    assert ("CMD", '["python", "-m", "bot"]') in stage


def test_the_image_installs_exactly_the_lock_and_for_the_python_it_was_resolved_for() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert re.search(r"pip install --require-hashes .*-r \S*requirements\.lock", runs)
    # The project itself goes in without resolving anything again.
    assert re.search(r"pip install --no-deps ", runs)
    base = next(arguments for keyword, arguments in instructions if keyword == "ARG")
    image_python = re.fullmatch(r"PYTHON_IMAGE=python:(\d+\.\d+)-\S+", base)
    lock_python = re.search(r"--python-version (\d+\.\d+)", LOCK_COMMAND)
    assert image_python is not None and lock_python is not None
    assert image_python[1] == lock_python[1]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether `docker build` leaves ``path`` out of the context: the last pattern matching
    it or one of its parent directories decides, "!" keeps."""

    def regex(pattern: str) -> re.Pattern[str]:
        translated = re.escape(pattern.strip("/"))
        translated = translated.replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        translated = re.sub(r"\\\[(.*?)\\\]", r"[\1]", translated).replace(r"\?", "[^/]")
        return re.compile(translated)

    parents = ["/".join(path.split("/")[: depth + 1]) for depth in range(path.count("/") + 1)]
    ignored = False
    for line in patterns:
        keep = line.startswith("!")
        pattern = regex(line.removeprefix("!"))
        if any(pattern.fullmatch(candidate) for candidate in parents):
            ignored = not keep
    return ignored


def test_the_build_context_holds_what_the_image_copies_and_never_the_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for keyword, arguments in dockerfile_instructions()
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    ]
    assert copied
    for source in copied:
        inside = f"{source}/__init__.py" if (ROOT / source).is_dir() else source
        assert not dockerignored(inside, patterns), f"{source} is copied but ignored"
    for kept_out in (".env", "data/imagine.db", ".venv/bin/python", "bot/__pycache__/app.pyc"):
        assert dockerignored(kept_out, patterns), kept_out


# -- compose --------------------------------------------------------------------------------------


def test_compose_starts_one_process_per_shard_whichever_the_profile() -> None:
    # Every process receives every interaction of the shards it connects: two processes on the
    # same shard would answer (and pay for) each /imagine twice.
    assert all(service.get("profiles") for service in bot_services().values())
    alone = enabled("alone")
    assert len(alone) == 1
    (lone,) = alone.values()
    assert "SHARD_IDS" not in lone.get("environment", {})
    shared = [service["environment"] for service in enabled("shared").values()]
    assert len(shared) >= 2
    counts = {int(environment["SHARD_COUNT"]) for environment in shared}
    assert len(counts) == 1
    shards = [int(shard) for environment in shared for shard in environment["SHARD_IDS"].split(",")]
    assert sorted(shards) == list(range(counts.pop()))


def test_the_shared_profile_shares_limits_and_ledger_between_its_bots() -> None:
    services = compose()["services"]
    for name, service in enabled("shared").items():
        environment = service["environment"]
        assert environment["RATE_LIMIT_STORAGE_URI"].startswith("redis://redis:"), name
        assert environment["DATABASE_URL"].startswith("postgresql://"), name
        assert "@postgres:" in environment["DATABASE_URL"], name
        for store in ("redis", "postgres"):
            assert "shared" in services[store]["profiles"]
            assert service["depends_on"][store]["condition"] == "service_healthy", name
        # Several bots starting together would race to migrate PostgreSQL: one service does it
        # before any of them starts.
        migrate = service["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully", name
    assert services["migrate"]["command"] == ["python", "-m", "bot", "migrate"]
    assert "shared" in services["migrate"]["profiles"]
    # The image has the clients of both (without them the bots would stop at start-up).
    assert SHARED_STORES["redis"][0] in IMAGE_EXTRAS
    assert "postgres" in IMAGE_EXTRAS


def test_every_variable_compose_names_is_documented_in_env_example() -> None:
    text = COMPOSE.read_text("utf-8")
    named = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    for service in image_services().values():
        named |= set(service.get("environment", {}))
    assert named
    missing = sorted(name for name in named if not re.search(rf"\n(# )?{name}=", documented()))
    assert not missing, f"not in .env.example: {', '.join(missing)}"


def test_a_dotenv_copied_from_env_example_keeps_the_settings_the_image_makes() -> None:
    # Compose's env_file (and `docker run --env-file`) override the image's ENV: a setting the
    # image makes (DATA_DIR=/data, its volume) must be left out of .env.example, or given again
    # by compose's own environment, which wins over env_file.
    image_env = " ".join(arguments for keyword, arguments in final_stage() if keyword == "ENV")
    made = {
        name
        for name in re.findall(r"\b([A-Z_][A-Z0-9_]*)=", image_env)
        if name.lower() in Settings.model_fields
    }
    assert "DATA_DIR" in made
    in_example = set(dotenv_values(ROOT / ".env.example"))
    for name in sorted(made & in_example):
        for service_name, service in image_services().items():
            assert name in service.get("environment", {}), (
                f"a .env copied from .env.example sets {name} over the image's in {service_name}"
            )


# What an operator puts in .env for compose to read: the shared profile's password.
COMPOSE_ENV = {"POSTGRES_PASSWORD": "letters0and0digits0only"}


def interpolated(value: str, dot_env: dict[str, str] = COMPOSE_ENV) -> str:
    """Compose's ${NAME} and ${NAME:-default}, with ``dot_env`` as the .env file."""

    def substitute(match: re.Match[str]) -> str:
        return dot_env.get(match[1]) or (match[2] or "")

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}", substitute, value)


def env_example() -> dict[str, str]:
    """What `docker run --env-file` and compose's env_file set from a .env copied from
    .env.example: every line NAME=value that is not a comment, an empty value too."""
    lines = (line.strip() for line in documented().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def image_env() -> dict[str, str]:
    env = " ".join(arguments for keyword, arguments in final_stage() if keyword == "ENV")
    return dict(re.findall(r"\b([A-Z_][A-Z0-9_]*)=(\S+)", env))


DOCKER_RUN = "docker run --env-file .env"


@pytest.mark.parametrize("started_by", [DOCKER_RUN, *sorted(image_services())])
def test_a_container_given_env_example_keeps_its_state_on_the_volume_and_checks_its_health(
    started_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment a container gets as docs/hosting.md starts it: the image's ENV, then
    the .env file over it (Docker and compose both let it win), then compose's environment."""
    # The image has the redis and postgres extras (checked above); this environment may not.
    monkeypatch.setattr(config, "_installed", lambda module: True)
    dot_env = env_example() | {"OPENAI_API_KEY": "sk-compose-0123456789"} | COMPOSE_ENV
    given = image_env() | dot_env
    if started_by != DOCKER_RUN:
        service = image_services()[started_by]
        given |= {
            key: interpolated(str(value), dot_env) for key, value in service["environment"].items()
        }
    for key, value in given.items():
        if key.lower() in Settings.model_fields:
            monkeypatch.setenv(key, value)
    settings = load_settings(require_discord=False, env_file=None)
    stage = final_stage()
    workdir = PurePosixPath([arguments for keyword, arguments in stage if keyword == "WORKDIR"][-1])
    data_dir = workdir / settings.data_dir  # a relative DATA_DIR is read from WORKDIR
    volumes = [
        PurePosixPath(volume)
        for keyword, arguments in stage
        if keyword == "VOLUME"
        for volume in json.loads(arguments)
    ]
    # Elsewhere the state would be lost with the container, in a directory the bot's user may
    # not even write (WORKDIR is root's): the bot would stop at every start.
    assert any(data_dir == volume or volume in data_dir.parents for volume in volumes), data_dir
    assert settings.metrics_port  # the health check has a server to ask


# -- systemd --------------------------------------------------------------------------------------


def test_the_systemd_unit_can_write_only_its_data_dir() -> None:
    service = unit()["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["User"] not in ("root", "0")
    data_dir = next(
        value.split("=", 1)[1]
        for value in unit_values("Environment")
        if value.startswith("DATA_DIR=")
    )
    assert data_dir in service["ReadWritePaths"].split()
    # A relative DATA_DIR from the settings file lands in a writable place.
    assert service["WorkingDirectory"] in service["ReadWritePaths"].split()
    assert service["EnvironmentFile"].startswith("/")


# -- dependencies and tooling ---------------------------------------------------------------------


def locked() -> dict[str, tuple[Version, bool]]:
    """Each locked package's version, and whether its line carries hashes."""
    pins: dict[str, tuple[Version, bool]] = {}
    entries = re.split(r"\n(?=\S)", LOCK.read_text("utf-8"))
    for entry in entries:
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        if match:
            pins[canonicalize_name(match[1])] = (Version(match[2]), "--hash=sha256:" in entry)
    return pins


def test_the_lock_pins_every_runtime_dependency_within_pyproject_s_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(line for extra in IMAGE_EXTRAS for line in extras[extra])]
    pins = locked()
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        version, hashed = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock has {requirement.name} {version}, outside {requirement.specifier}"
        )
        assert hashed, f"{requirement.name} has no hash in requirements.lock"


def test_every_locked_package_has_hashes() -> None:
    pins = locked()
    assert pins and all(hashed for _, hashed in pins.values())


def test_pre_commit_runs_the_same_checks_as_ci() -> None:
    ci = [
        shlex.split(line)
        for line in (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
        if line.split()[:1] in (["ruff"], ["mypy"])
    ]
    hooks = [
        hook
        for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text("utf-8"))["repos"]
        for hook in repo["hooks"]
    ]
    assert len(ci) == 3
    for command in ci:
        # CI names the directory (.) where pre-commit passes the files; --force-exclude makes
        # ruff skip pyproject's excludes for those files too, as it does for a directory.
        wanted = [word for word in command if word != "."]
        matching = [
            hook
            for hook in hooks
            if [w for w in shlex.split(hook["entry"]) if w != "--force-exclude"] == wanted
        ]
        assert matching, f"no pre-commit hook runs {' '.join(command)}"
        assert all(hook["language"] == "system" for hook in matching)


def test_the_licence_file_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["license"]
    assert (ROOT / "LICENSE").read_text("utf-8").splitlines()[0] == f"{declared} License"


def test_the_systemd_unit_lets_the_bot_open_more_files_than_systemd_s_default() -> None:
    """Each image call in flight holds a connection: systemd's 1,024 open files is too few."""
    assert int(unit_values("LimitNOFILE")[-1]) >= 4 * 1024


def test_the_systemd_unit_does_not_restart_what_a_restart_cannot_fix() -> None:
    """Status 2: a setting to fix, or a database a newer version migrated (bot/app.py)."""
    assert unit_values("RestartPreventExitStatus") == ["2"]
    assert unit_values("Restart") == ["on-failure"]
