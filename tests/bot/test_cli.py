"""The command-line front door, run as operators run it: a subprocess against the fake API."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from bot.app import ImagineBot, ModerationUnusable
from tests.cogs.conftest import make_settings
from tests.conftest import API_KEY
from tests.fakes.images_api import OPENAI_RETIRED, TEXT_MODELS, FakeImagesAPI

ROOT = Path(__file__).resolve().parents[2]


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DISCORD_"))}
    base["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        env=base | env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_imagine_writes_the_images(images_api: FakeImagesAPI, tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, out, err = await run_cli(
        "imagine", "a cute baby sea otter", "--model", "gpt-image-1", "--size", "1024x1024",
        "--quality", "low", "--count", "2", "--out", str(tmp_path / "out"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    files = sorted((tmp_path / "out").iterdir())
    assert [f.read_bytes() for f in files] == images_api.served
    assert all(f.name.endswith(".png") and "a-cute-baby-sea-otter" in f.name for f in files)
    assert "2 image(s) from gpt-image-1" in out
    assert images_api.generation_requests[0].body["user"] == "operator-cli"


async def test_imagine_refuses_a_bad_size_without_calling(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, _, err = await run_cli(
        "imagine", "otter", "--model", "dall-e-3", "--size", "256x256", env=env, cwd=tmp_path
    )
    assert code == 2
    assert err.strip() == "error: dall-e-3 takes the sizes 1024x1024, 1792x1024, 1024x1792."
    assert images_api.generation_requests == []


async def test_imagine_reports_a_rejected_key_in_one_sentence(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": "sk-wrong-SENTINEL-987654321", "OPENAI_BASE_URL": images_api.base_url}
    code, out, err = await run_cli("imagine", "otter", env=env, cwd=tmp_path)
    assert code == 1
    assert err.startswith("error: The image service rejected the bot's API key.")
    assert "Traceback" not in err and "SENTINEL" not in err + out


async def test_check_says_the_endpoint_accepts_the_key(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 0, err
    assert "accepts the key" in out
    assert images_api.generation_requests == []


async def test_check_says_whether_the_text_model_is_served(tmp_path: Path) -> None:
    """A gateway without TEXT_MODEL: /describe and Enhance are not offered, and check says so;
    one that lists it: check names it."""
    for served, said in [
        (frozenset(), "warning: the endpoint does not list the text model gpt-5.4-mini"),
        (TEXT_MODELS, "text model (/describe, Enhance): gpt-5.4-mini"),
    ]:
        fake = FakeImagesAPI(api_key=API_KEY, text_models=served)
        await fake.start()
        try:
            env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.base_url}
            code, out, err = await run_cli("check", env=env, cwd=tmp_path)
        finally:
            await fake.close()
        assert code == 0, err
        assert said in out
        assert fake.chat_requests == []  # nothing paid for


async def test_missing_configuration_is_one_sentence(tmp_path: Path) -> None:
    code, _, err = await run_cli("check", env={}, cwd=tmp_path)
    assert code == 2
    assert err.strip() == (
        "configuration error: OPENAI_API_KEY is not set: it must be the API key of the "
        "OpenAI account or gateway (sent as a Bearer token)."
    )


@pytest.mark.parametrize("command", [[], ["run"]])
async def test_the_bot_needs_a_token(command: list[str], tmp_path: Path) -> None:
    code, _, err = await run_cli(*command, env={"OPENAI_API_KEY": API_KEY}, cwd=tmp_path)
    assert code == 2
    assert "DISCORD_TOKEN is not set" in err


async def test_a_first_imagine_with_the_defaults_works_against_todays_openai(
    tmp_path: Path,
) -> None:
    fake = FakeImagesAPI(api_key=API_KEY, retired=OPENAI_RETIRED)
    await fake.start()
    try:
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.base_url}
        code, out, err = await run_cli("imagine", "a lighthouse", env=env, cwd=tmp_path)
        assert code == 0, err
        assert "1 image(s) from gpt-image-2.5-flare" in out
        code, _, err = await run_cli(
            "imagine", "a lighthouse", "--model", "gpt-image-1", env=env, cwd=tmp_path
        )
        assert code == 1
        assert err.startswith(
            "error: The model gpt-image-1 is not available on this image service (it was shut "
            "down on OpenAI on 2026-10-23)."
        )
        code, out, err = await run_cli("check", env=env, cwd=tmp_path)
        assert code == 0, err
    finally:
        await fake.close()
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if "  " in line}
    assert rows["gpt-image-2.5-flare"][:2] == ["lists", "default"]
    assert rows["gpt-image-1"][:2] == ["lacks", "-"]
    assert "shut down on OpenAI on 2026-10-23" in " ".join(rows["gpt-image-1"])
    assert "warning: the endpoint does not list gpt-image-1, so it is not offered" in out


async def test_an_unusable_out_directory_is_refused_before_anything_is_paid(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    occupied = tmp_path / "taken"
    occupied.write_text("not a directory")
    code, _, err = await run_cli("imagine", "otter", "--out", str(occupied), env=env, cwd=tmp_path)
    assert code == 2
    assert err.strip() == f"error: --out {occupied}: exists and is not a directory"
    assert images_api.generation_requests == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_fake_api_runs_on_its_own_for_newcomers_without_a_key(tmp_path: Path) -> None:
    port = free_port()
    fake = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.images_api", "--port", str(port),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert fake.stdout is not None
        banner = await asyncio.wait_for(fake.stdout.readline(), 30)
        assert f"http://127.0.0.1:{port}/v1" in banner.decode()
        env = {"OPENAI_API_KEY": "fake-key", "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
        code, _, err = await run_cli(
            "imagine", "a lighthouse", "--out", "out", env=env, cwd=tmp_path
        )
        assert code == 0, err
        assert len(list((tmp_path / "out").iterdir())) == 1
    finally:
        fake.terminate()
        await fake.wait()


async def test_two_runs_never_overwrite_each_others_images(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    runs = [run_cli("imagine", "a cat", "--out", "same", env=env, cwd=tmp_path) for _ in range(2)]
    for code, _, err in await asyncio.gather(*runs):
        assert code == 0, err
    assert len(list((tmp_path / "same").iterdir())) == 2


async def test_images_that_cannot_be_written_are_one_sentence_with_the_request_id(
    images_api: FakeImagesAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import errno

    import bot.__main__ as cli

    out = tmp_path / "out"
    out.mkdir()
    taken = out / "x.png"
    taken.write_bytes(b"first")
    assert cli._write_new(taken, b"second") == out / "x-1.png"
    assert taken.read_bytes() == b"first"

    def disk_full(path: Path, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The disk fills between the check of --out and the writing of the images.
    monkeypatch.setattr(cli, "_write_new", disk_full)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", images_api.base_url)
    # In a thread: the fake API answers on this test's event loop.
    code = await asyncio.to_thread(cli.main, ["imagine", "a cat", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(
        f"error: the images were generated but could not be written into {out} "
        "(No space left on device); request id req_"
    )


async def test_check_warns_of_what_the_bot_would_refuse(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("")
    env = {
        "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url, "DATA_DIR": "afile",
    }  # fmt: skip
    code, out, err = await run_cli("check", env=env, cwd=tmp_path)
    assert code == 0, err
    assert "warning: DISCORD_TOKEN is not set: the bot (python -m bot) needs it" in out
    assert "warning: DATA_DIR is not valid: it must be a writable directory" in out


async def test_check_reports_whether_the_endpoint_has_a_moderation_check(tmp_path: Path) -> None:
    fake = FakeImagesAPI(api_key=API_KEY, moderations_route=False)
    await fake.start()
    try:
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.base_url}
        code, out, err = await run_cli("check", env=env, cwd=tmp_path)
        assert code == 0, err
        assert "the endpoint has no moderation check (/moderations)" in out
        code, out, err = await run_cli(
            "check", env={**env, "MODERATION_CHECK": "strict"}, cwd=tmp_path
        )
        assert code == 1
        assert "error: MODERATION_CHECK is strict, but the endpoint has no moderation check" in err
    finally:
        await fake.close()


async def test_check_says_the_moderation_check_is_there(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, out, err = await run_cli("check", env={**env, "MODERATION_CHECK": "on"}, cwd=tmp_path)
    assert code == 0, err
    assert "the endpoint has a moderation check (/moderations); MODERATION_CHECK is on" in out


async def test_moderation_check_on_without_the_route_stops_start_up(tmp_path: Path) -> None:
    fake = FakeImagesAPI(api_key=API_KEY, moderations_route=False)
    await fake.start()
    settings = make_settings(fake.base_url, tmp_path, moderation_check="on")
    bot = ImagineBot(settings, sync_on_start=False)
    try:
        with pytest.raises(ModerationUnusable) as caught:
            await bot.setup_hook()
    finally:
        await bot.close()
        await fake.close()
    assert str(caught.value).startswith(
        "MODERATION_CHECK is on, but the endpoint has no moderation check"
    )
    assert fake.generation_requests == []
