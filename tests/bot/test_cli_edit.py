"""``python -m bot edit``, run as operators run it: a subprocess against the fake API."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from tests.bot.test_cli import run_cli
from tests.conftest import API_KEY
from tests.fakes.images_api import FakeImagesAPI, edit_form_problem


def write_png(path: Path, size: tuple[int, int], transparent: bool = False) -> bytes:
    buffer = io.BytesIO()
    mode, colour = ("RGBA", (0, 0, 0, 0)) if transparent else ("RGB", (10, 120, 200))
    Image.new(mode, size, colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


async def test_edit_sends_the_images_and_mask_and_writes_the_results(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    room = write_png(tmp_path / "room.png", (64, 64))
    lamp = write_png(tmp_path / "lamp.png", (32, 32))
    mask = write_png(tmp_path / "mask.png", (64, 64), transparent=True)
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, out, err = await run_cli(
        "edit", "room.png", "lamp.png", "--prompt", "put the lamp in the room", "--mask",
        "mask.png", "--model", "gpt-image-1.5", "--quality", "low", "--count", "2",
        "--input-fidelity", "high", "--out", "out", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    files = sorted((tmp_path / "out").iterdir())
    assert [f.read_bytes() for f in files] == images_api.served
    assert all("put-the-lamp-in-the-room" in f.name for f in files)
    assert "2 image(s) from gpt-image-1.5" in out

    (sent,) = images_api.edit_requests
    form = sent.body
    assert edit_form_problem(form) is None
    assert [part.data for part in form["image[]"]] == [room, lamp]
    assert form["mask"][0].data == mask
    assert (form["user"], form["input_fidelity"], form["n"]) == ("operator-cli", "high", "2")
    assert not images_api.generation_requests


async def test_edit_refuses_a_mask_of_another_size_without_calling(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    write_png(tmp_path / "cat.png", (64, 64))
    write_png(tmp_path / "mask.png", (32, 32), transparent=True)
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, _, err = await run_cli(
        "edit", "cat.png", "--prompt", "x", "--mask", "mask.png", env=env, cwd=tmp_path
    )
    assert code == 2
    assert err.strip() == (
        "error: The mask is 32x32 but the image is 64x64; they must be the same size."
    )
    assert not images_api.edit_requests


async def test_edit_refuses_a_missing_file_and_a_model_that_cannot_edit(
    images_api: FakeImagesAPI, tmp_path: Path
) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": images_api.base_url}
    code, _, err = await run_cli("edit", "nowhere.png", "--prompt", "x", env=env, cwd=tmp_path)
    assert code == 2
    assert err.strip() == "error: nowhere.png cannot be read (No such file or directory)."

    write_png(tmp_path / "cat.png", (64, 64))
    code, _, err = await run_cli(
        "edit", "cat.png", "--prompt", "x", "--model", "dall-e-3", env=env, cwd=tmp_path
    )
    assert code == 2
    assert err.startswith("error: dall-e-3 cannot edit images; these can: gpt-image-2.5-flare,")
    assert not images_api.edit_requests
