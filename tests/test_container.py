"""The image, built from the Dockerfile, started as docs/hosting.md says (its `docker run
--env-file .env` command, and `docker compose up` with compose.yaml's default profile), with a
.env copied from .env.example and its two secrets filled in, until its HEALTHCHECK says
healthy; then stopped as `docker stop` stops it.

It needs a Docker daemon and the image: `.ci/container` builds it and runs this file with
IMAGINE_BOT_IMAGE naming it; elsewhere the test is skipped. The container reaches no real
service: discord.com and gateway.discord.gg resolve to the host's end of Docker's bridge, where
simcord's backend answers over HTTPS (tests/fakes/discord_server.py, with a certificate made
here that the container alone trusts), and OPENAI_BASE_URL is the fake Images API there.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import struct
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY, DISCORD_TOKEN
from tests.fakes.discord_server import HOSTS, NetworkDiscord
from tests.fakes.images_api import FakeImagesAPI

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("IMAGINE_BOT_IMAGE", "")
CERTIFICATE_IN_CONTAINER = "/etc/imagine-ci/discord.pem"
# The image's HEALTHCHECK runs every 30 s from the start (its start period only forgives
# failures): healthy within one interval and a bit, or never.
HEALTHY_WITHIN = 150.0
# Matplotlib's own words when it builds its font list or has no writable directory for it.
MATPLOTLIB_REBUILDS = ("building the font cache", "temporary cache directory")
SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address

pytestmark = pytest.mark.skipif(
    not IMAGE, reason="no image to start: .ci/container builds one and sets IMAGINE_BOT_IMAGE"
)


async def run(*command: str, check: bool = True) -> str:
    """Run a command; its output (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if check and process.returncode != 0:
        pytest.fail(f"{shlex.join(command)} failed ({process.returncode}):\n{text}")
    return text


async def docker(*args: str, check: bool = True) -> str:
    return await run("docker", *args, check=check)


def readme_docker_run() -> list[str]:
    """The `docker run` command of the hosting page's Docker section, as words."""
    page = (ROOT / "docs" / "hosting.md").read_text("utf-8")
    section = page.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    command = next(
        block
        for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
        if "docker run" in block
    )
    line = next(line for line in command.replace("\\\n", " ").splitlines() if "docker run" in line)
    return shlex.split(line)


def dot_env(base_url: str) -> str:
    """.env.example with what the README says to fill in: the two secrets (and the fake's URL)."""
    text = (ROOT / ".env.example").read_text("utf-8")
    for name, value in (
        ("DISCORD_TOKEN", DISCORD_TOKEN),
        ("OPENAI_API_KEY", API_KEY),
        ("OPENAI_BASE_URL", base_url),
    ):
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f".env.example has no line {name}="
    return text


async def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for Discord's host names, and its key."""
    certificate, key = directory / "discord.pem", directory / "discord.key"
    names = ",".join(f"DNS:{host}" for host in HOSTS)
    await run(
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(key), "-out", str(certificate), "-subj", f"/CN={HOSTS[0]}"),
        *("-addext", f"subjectAltName={names}"),
    )
    certificate.chmod(0o644)  # read by the bot's uid in the container
    return certificate, key


async def bridge_gateway() -> str:
    """The host's address on Docker's default bridge: what the container reaches the host at
    (the bridge's gateway where Docker names it, else its interface's address)."""
    found = await docker("network", "inspect", "bridge", "--format", "{{json .}}")
    network = json.loads(found)
    gateways = [entry["Gateway"] for entry in network["IPAM"]["Config"] if entry.get("Gateway")]
    if gateways:
        return str(gateways[0])
    interface = network["Options"].get("com.docker.network.bridge.name", "docker0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
    return socket.inet_ntoa(answer[20:24])


async def state(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await docker("inspect", "--format", "{{json .}}", name))
    return document


async def wait_until_healthy(name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HEALTHY_WITHIN
    while True:
        document = await state(name)
        status = document["State"]
        health = status.get("Health") or {}
        if health.get("Status") == "healthy":
            return
        if document["RestartCount"] or status["Status"] in ("exited", "dead", "restarting"):
            logs = await docker("logs", "--tail", "40", name, check=False)
            pytest.fail(
                f"the bot stopped ({status['Status']}, restarted {document['RestartCount']} "
                f"time(s)) instead of becoming healthy:\n{logs}"
            )
        if loop.time() > deadline:
            logs = await docker("logs", "--tail", "40", name, check=False)
            checks = "\n".join(entry["Output"] for entry in health.get("Log", []))
            pytest.fail(
                f"not healthy after {HEALTHY_WITHIN:.0f} s ({health.get('Status')}); "
                f"its health checks said:\n{checks}\nits log:\n{logs}"
            )
        await asyncio.sleep(1)


@dataclass
class Fakes:
    """Discord and the image service where the container reaches them, and what it needs to."""

    discord: NetworkDiscord
    images: FakeImagesAPI
    certificate: Path  # the fake Discord's, which the container alone trusts
    host: str  # the host's address on the bridge

    def wiring(self) -> tuple[list[str], str, dict[str, str]]:
        """What the container needs besides: Discord's host names on the host, the certificate
        mounted, and SSL_CERT_FILE naming it."""
        hosts = [f"{host}:{self.host}" for host in HOSTS]
        mount = f"{self.certificate}:{CERTIFICATE_IN_CONTAINER}:ro"
        return hosts, mount, {"SSL_CERT_FILE": CERTIFICATE_IN_CONTAINER}

    def env_file(self, directory: Path) -> Path:
        path = directory / ".env"
        path.write_text(dot_env(self.images.base_url), "utf-8")
        return path


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    host = await bridge_gateway()
    certificate, key = await make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    discord = NetworkDiscord(token=DISCORD_TOKEN)
    images = FakeImagesAPI(api_key=API_KEY)
    try:
        await discord.start(host, 443, context)
    except PermissionError:
        pytest.fail("listening on port 443 (where discord.py sends its requests) needs root")
    await images.start(host=host)
    yield Fakes(discord, images, certificate, host)
    await images.close()
    await discord.close()


async def check_the_running_bot(container: str, fakes: Fakes) -> None:
    await wait_until_healthy(container)
    # The bot logged in, synced its commands and connected its one shard, with its token...
    assert fakes.discord.identified == [[0, 1]]
    application = fakes.discord.backend.application_id
    assert f"PUT /applications/{application}/commands" in fakes.discord.requests
    assert not fakes.discord.gaps and not fakes.discord.refused_tokens
    # ... and asked the image service what it serves, and whether it has a moderation check.
    paths = sorted(request.path for request in fakes.images.requests)
    assert paths == ["/v1/models", "/v1/moderations"]
    # /usage's chart imports matplotlib: its font list is the image's, never rebuilt.
    matplotlib = await docker("exec", container, "python", "-c", "import matplotlib.font_manager")
    assert not [words for words in MATPLOTLIB_REBUILDS if words in matplotlib], matplotlib


async def check_the_stopped_bot(container: str) -> None:
    """After `docker stop` (or compose's): SIGTERM, a drain, a clean exit, no secret logged."""
    stopped = await state(container)
    logs = await docker("logs", container)
    assert stopped["State"]["ExitCode"] == 0, logs
    assert "shutting down" in logs
    assert DISCORD_TOKEN not in logs and API_KEY not in logs


async def test_docker_run_as_the_readme_says_becomes_healthy_and_stops_cleanly(
    tmp_path: Path, fakes: Fakes
) -> None:
    env_file = fakes.env_file(tmp_path)
    suffix = uuid.uuid4().hex[:8]
    name, volume = f"imagine-bot-ci-{suffix}", f"imagine-data-ci-{suffix}"
    # The README's command with its names made unique, the fakes' wiring added before the image.
    words = readme_docker_run()
    assert words[:2] == ["docker", "run"] and words[-1] == "imagine-bot", words
    replaced = {"imagine-bot": name, "imagine-data:/data": f"{volume}:/data", ".env": str(env_file)}
    arguments = [replaced.get(word, word) for word in words[2:-1]]
    assert set(replaced.values()) <= set(arguments), arguments
    hosts, mount, environment = fakes.wiring()
    for host in hosts:
        arguments += ["--add-host", host]
    arguments += ["-v", mount]
    for variable, value in environment.items():
        arguments += ["-e", f"{variable}={value}"]
    try:
        await docker("run", *arguments, IMAGE)
        await check_the_running_bot(name, fakes)
        await docker("stop", name)
        await check_the_stopped_bot(name)
    finally:
        await docker("rm", "--force", "--volumes", name, check=False)
        await docker("volume", "rm", "--force", volume, check=False)


async def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) where the client has it, else v1 (`docker-compose`)."""
    if "version" in (await docker("compose", "version", check=False)).lower():
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no Docker Compose: install docker-compose (.ci/container does)")


async def test_compose_up_as_the_readme_says_becomes_healthy_and_stops_cleanly(
    tmp_path: Path, fakes: Fakes
) -> None:
    """compose.yaml's default profile, with .env copied from .env.example beside it."""
    project = tmp_path / "project"
    project.mkdir()
    fakes.env_file(project)
    hosts, mount, environment = fakes.wiring()
    # Only the fakes' wiring and the image built for this run are added to compose.yaml.
    override = {
        "services": {
            "bot": {
                "image": IMAGE,
                "extra_hosts": hosts,
                "volumes": [mount],
                "environment": environment,
            }
        }
    }
    (project / "ci.yaml").write_text(json.dumps(override), "utf-8")  # JSON is YAML
    compose = [
        *await compose_command(),
        "--project-directory", str(project),
        "--project-name", f"imagine-ci-{uuid.uuid4().hex[:8]}",
        "--file", str(ROOT / "compose.yaml"),
        "--file", str(project / "ci.yaml"),
    ]  # fmt: skip
    try:
        await run(*compose, "up", "-d", "--no-build")
        containers = (await run(*compose, "ps", "-q")).split()
        assert len(containers) == 1, "the default profile starts the bot alone"
        await check_the_running_bot(containers[0], fakes)
        await run(*compose, "stop")
        await check_the_stopped_bot(containers[0])
    finally:
        await run(*compose, "down", "--volumes", check=False)
