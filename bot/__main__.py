"""``python -m bot`` and its sub-commands.

python -m bot                 start the Discord bot (same as `run`)
python -m bot sync            push the slash-command definitions to Discord, then exit
python -m bot check           validate the configuration, probe the rate-limit store and endpoint
python -m bot imagine PROMPT  generate images from the command line into --out
python -m bot edit IMAGE...   edit images (--prompt, --mask) from the command line into --out
python -m bot migrate         bring the usage ledger's database up to date
python -m bot usage           requests, images and cost from the usage ledger
python -m bot health          ask the running bot's /healthz (METRICS_PORT); exit 0 when healthy
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path

import aiohttp

from bot.config import ConfigError, Settings, data_dir_problem, load_settings
from bot.images import (
    EditRequest,
    GenerationResult,
    ImageClient,
    ImageError,
    ImageRequest,
    PreparedRequest,
    UnsupportedOption,
)
from bot.images.catalog import OPTION_VALUES
from bot.images.edits import check_counts, check_file_size, input_fields, max_input_bytes
from bot.images.pricing import format_usd
from bot.requests.offer import ModelOffer, narrow, text_model_offered
from bot.services import make_client
from bot.store.ratelimit import UserRateLimiter

log = logging.getLogger("bot")

# The CLI is the operator trying a key; the API's `user` field still carries something stable.
CLI_USER = "operator-cli"


def _slug(prompt: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return words[:40].rstrip("-") or "image"


def _destination_problem(out: Path) -> str | None:
    """Why the images could not be written into ``out``, or None (it is created if missing)."""
    if out.exists() and not out.is_dir():
        return "exists and is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({exc.strerror})"
    if not os.access(out, os.W_OK | os.X_OK):
        return "is not writable"
    return None


def _write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, or beside it under a free name: never over another file
    (two runs in the same second with the same prompt would otherwise overwrite each other)."""
    for attempt in range(1000):
        candidate = path if not attempt else path.with_stem(f"{path.stem}-{attempt}")
        try:
            with candidate.open("xb") as handle:
                handle.write(data)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free name beside {path}")


def _save(result: GenerationResult, out: Path, prompt: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(prompt)}"
    for index, image in enumerate(result.images, start=1):
        path = _write_new(out / f"{stem}-{index}.{image.format}", image.data)
        print(f"{path}  ({image.width}x{image.height} {image.format}, {len(image.data):,} bytes)")


def _request(settings: Settings, args: argparse.Namespace, prompt: str) -> ImageRequest:
    """The request the options describe (``edit`` has no GIF or style options: None)."""
    return ImageRequest(
        prompt=prompt,
        model=args.model or settings.default_model,
        size=args.size,
        quality=args.quality,
        count=args.count,
        user=CLI_USER,
        output_format=args.output_format,
        output_compression=args.output_compression,
        background=args.background,
        moderation=getattr(args, "moderation", None),
        complexity=args.complexity,
        style=getattr(args, "style", None),
        frame_count=getattr(args, "frames", None),
        frame_duration_ms=getattr(args, "frame_ms", None),
    )


def _read_input(path: Path, field: str, max_bytes: int) -> bytes:
    """An input image's bytes, refused by its size before it is read (never unbounded)."""
    try:
        with path.open("rb") as handle:
            check_file_size(field, os.fstat(handle.fileno()).st_size, max_bytes)
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise UnsupportedOption(
            field, f"{path} cannot be read ({exc.strerror or type(exc).__name__})."
        ) from None
    check_file_size(field, len(data), max_bytes)  # a file that grew while it was read
    return data


async def _prepare_edit(
    client: ImageClient, request: ImageRequest, args: argparse.Namespace
) -> PreparedRequest:
    spec = client.edit_spec(request.model)
    check_counts(spec, len(args.images), args.mask is not None)
    fields = input_fields(len(args.images))
    images = tuple(
        [
            await asyncio.to_thread(_read_input, path, field, max_input_bytes(spec, field))
            for field, path in zip(fields, args.images, strict=True)
        ]
    )
    mask = None
    if args.mask is not None:
        mask = await asyncio.to_thread(
            _read_input, args.mask, "mask", max_input_bytes(spec, "mask")
        )
    edit = EditRequest(request, images, mask=mask, input_fidelity=args.input_fidelity)
    return await client.prepare_edit(edit)


async def _imagine(settings: Settings, args: argparse.Namespace) -> int:
    request = _request(settings, args, args.prompt)

    async def prepare(client: ImageClient) -> PreparedRequest:
        return client.prepare(request)

    return await _generate_into(settings, args.out, prepare)


async def _edit(settings: Settings, args: argparse.Namespace) -> int:
    request = _request(settings, args, args.prompt)

    async def prepare(client: ImageClient) -> PreparedRequest:
        return await _prepare_edit(client, request, args)

    return await _generate_into(settings, args.out, prepare)


async def _generate_into(
    settings: Settings,
    out: Path,
    prepare: Callable[[ImageClient], Awaitable[PreparedRequest]],
) -> int:
    """Prepare (nothing is sent if that refuses), check ``out``, generate, save, report."""
    async with aiohttp.ClientSession() as session:
        client = make_client(session, settings)
        try:
            prepared = await prepare(client)
            # Before anything is paid for: the images must have somewhere to go.
            problem = await asyncio.to_thread(_destination_problem, out)
            if problem is not None:
                print(f"error: --out {out}: {problem}", file=sys.stderr)
                return 2
            result = await client.generate(prepared)
        except UnsupportedOption as exc:
            print(f"error: {exc.user_message}", file=sys.stderr)
            return 2
        except ImageError as exc:
            print(f"error: {exc.user_message} ({exc})", file=sys.stderr)
            return 1
        finally:
            await client.close()
    try:
        await asyncio.to_thread(_save, result, out, prepared.prompt)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        print(
            f"error: the images were generated but could not be written into {out} "
            f"({reason}); request id {result.request_id or '-'}",
            file=sys.stderr,
        )
        return 1
    if result.missing:
        print(f"warning: {len(result.images)} of the {prepared.count} images came back")
    summary = f"{len(result.images)} image(s) from {result.model} in {result.elapsed:.1f}s"
    if result.request_id:
        summary += f", request id {result.request_id}"
    print(summary)
    if result.revised_prompt:
        print(f"revised prompt: {result.revised_prompt}")
    return 0


def _model_table(settings: Settings, offer: ModelOffer) -> list[str]:
    """One line per catalog model: does the endpoint list it, its status, is it offered."""
    width = max(len(name) for name in settings.catalog)
    lines = [f"{'model':<{width}}  {'endpoint':<8}  {'offered':<7}  status"]
    for name, spec in settings.catalog.items():
        listed = offer.listed(name)
        on_endpoint = "?" if listed is None else ("lists" if listed else "lacks")
        offered = "default" if name == offer.default else ("yes" if name in offer.models else "-")
        lines.append(f"{name:<{width}}  {on_endpoint:<8}  {offered:<7}  {spec.describe_status()}")
    if offer.endpoint is not None:
        unknown = sorted(set(offer.endpoint) - set(settings.catalog))
        image_like = [name for name in unknown if "image" in name or "dall" in name]
        if image_like:
            shown = ", ".join(image_like[:20]) + (", …" if len(image_like) > 20 else "")
            lines.append(f"the endpoint also lists, unknown to the catalog: {shown}")
    return lines


def _what_run_needs(settings: Settings) -> list[str]:
    """What `python -m bot` would refuse that `check` and `imagine` do not need."""
    needs = []
    if settings.discord_token is None:
        needs.append("DISCORD_TOKEN is not set: the bot (python -m bot) needs it")
    unwritable = data_dir_problem(settings.data_dir)
    if unwritable is not None:
        needs.append(f"{unwritable}: the bot needs it")
    return needs


async def _check(settings: Settings) -> int:
    print(f"configuration is valid; endpoint {settings.openai_base_url}")
    for need in _what_run_needs(settings):
        print(f"warning: {need}")
    limiter = UserRateLimiter(settings.user_rate_limit, settings.rate_limit_storage_uri)
    silent_store = await limiter.probe()
    if silent_store is None:
        print(f"rate-limit store: {limiter.store}")
    else:  # the endpoint is still checked: the operator learns of both problems at once
        print(f"error: {silent_store}", file=sys.stderr)
    async with aiohttp.ClientSession() as session:
        client = make_client(session, settings)
        try:
            result = await client.check()
            moderations = await client.has_moderations()
        except ImageError as exc:
            print(f"error: {exc.user_message} ({exc})", file=sys.stderr)
            return 1
        finally:
            await client.close()
    print(result.detail)
    if result.models is None:
        print("the endpoint does not list its models: every configured model is offered")
    offer = narrow(settings, result.models)
    for line in _model_table(settings, offer):
        print(line)
    for name in offer.lacking:
        print(f"warning: the endpoint does not list {name}, so it is not offered")
    if offer.default != settings.default_model:
        print(
            f"warning: DEFAULT_MODEL {settings.default_model} is not served; "
            f"{offer.default} is the default instead"
        )
    line = _moderation_line(moderations, settings.moderation_check)
    print(line, file=sys.stderr if line.startswith("error") else sys.stdout)
    unusable = moderations is False and settings.moderation_check != "off"
    text_model, not_offered = text_model_offered(settings, result.models)
    if text_model is not None:
        print(f"text model (/describe, Enhance): {text_model.name}")
    else:
        print(f"warning: {not_offered}")
    return 0 if silent_store is None and not unusable else 1


def _moderation_line(moderations: bool | None, wanted: str) -> str:
    """What `check` says of the moderation check (an error where MODERATION_CHECK needs it)."""
    if moderations is None:
        return "warning: could not tell whether the endpoint has /moderations"
    if moderations:
        return f"the endpoint has a moderation check (/moderations); MODERATION_CHECK is {wanted}"
    if wanted != "off":
        return (
            f"error: MODERATION_CHECK is {wanted}, but the endpoint has no moderation check "
            "(/moderations): the bot will not start"
        )
    return "the endpoint has no moderation check (/moderations): servers cannot turn it on"


async def _migrate(settings: Settings) -> int:
    from bot.store.db import (
        DatabaseTooNew,
        DatabaseUnavailable,
        masked_database_url,
        migrate_database,
    )

    try:
        revision = await migrate_database(settings.database)
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, DatabaseTooNew) else 1
    print(f"database {masked_database_url(settings.database)} is at revision {revision}")
    return 0


async def _usage(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store.db import (
        DATABASE_FAILURES,
        DatabaseTooNew,
        DatabaseUnavailable,
        describe_failure,
        open_for_reading,
    )
    from bot.store.usage import ledger_rows, table, totals, write_csv

    try:
        # Read-only, and never migrated: a report does not change the operator's schema.
        engine = await open_for_reading(settings.database)
        try:
            by_model, by_member = await totals(engine, args.since, args.server)
            rows = await ledger_rows(engine, args.since, args.server) if args.csv else []
        finally:
            await engine.dispose()
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, DatabaseTooNew) else 1
    except DATABASE_FAILURES as exc:
        print(f"error: {describe_failure(settings.database, exc)}", file=sys.stderr)
        return 1
    written = None
    if args.csv is not None:
        try:
            written = await asyncio.to_thread(write_csv, args.csv, rows)
        except OSError as exc:
            print(f"error: --csv {args.csv}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    period = f"since {args.since.isoformat()}" if args.since else "all time"
    where = f"server {args.server}" if args.server is not None else "all servers"
    requests = sum(row.requests for row in by_model)
    images = sum(row.images for row in by_model)
    cost = sum((Decimal(row.cost) for row in by_model), start=Decimal(0))
    unknown = sum(row.unknown_cost for row in by_model)
    print(
        f"usage {period}, {where}: {requests} request(s), {images} image(s) delivered, "
        f"{format_usd(cost)} where the cost is known, {unknown} request(s) of unknown cost"
    )
    print()
    print("\n".join(table("model", by_model)))
    print()
    print("\n".join(table("member", by_member)))
    if written is not None:
        print(f"\nwrote {written} row(s) to {args.csv}")
    return 0


HEALTH_TIMEOUT = 10.0  # seconds: the bot's own checks take at most 3


def _health_url(settings: Settings) -> str | None:
    """Where the running bot answers /healthz: METRICS_HOST, or loopback where the bot listens
    on every address."""
    if not settings.metrics_port:
        return None
    host = settings.metrics_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - read, not bound: every address
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.metrics_port}/healthz"


async def _health(settings: Settings) -> int:
    url = _health_url(settings)
    if url is None:
        print(
            "unhealthy: METRICS_PORT is not set (or 0): the bot serves /healthz only on a "
            "port given there",
            file=sys.stderr,
        )
        return 1
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)) as session,
            session.get(url) as response,
        ):
            report = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(f"unhealthy: no answer from {url} ({type(exc).__name__})", file=sys.stderr)
        return 1
    parts = {
        name: part
        for name, part in (report.items() if isinstance(report, dict) else ())
        if isinstance(part, dict)
    }
    summary = ", ".join(f"{name}: {part.get('detail', '?')}" for name, part in parts.items())
    if response.status == 200:
        print(f"healthy: {summary}")
        return 0
    failing = ", ".join(
        f"{name}: {part.get('detail', '?')}" for name, part in parts.items() if not part.get("ok")
    )
    print(f"unhealthy (HTTP {response.status}): {failing or summary}", file=sys.stderr)
    return 1


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in the form YYYY-MM-DD") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="start the Discord bot (the default)")
    commands.add_parser("sync", help="push the slash-command definitions to Discord")
    commands.add_parser("check", help="validate the configuration and probe the endpoint")
    commands.add_parser("migrate", help="bring the usage ledger's database up to date")
    commands.add_parser("health", help="ask the running bot whether it is healthy")
    usage = commands.add_parser("usage", help="requests, images and cost from the usage ledger")
    usage.add_argument("--since", type=_date, help="from this day on (UTC), YYYY-MM-DD")
    usage.add_argument("--server", type=int, metavar="ID", help="one Discord server's id")
    usage.add_argument("--csv", type=Path, metavar="FILE", help="also write the rows to FILE")
    imagine = commands.add_parser("imagine", help="generate images into a directory")
    imagine.add_argument("prompt")
    _add_image_options(imagine)
    imagine.add_argument("--style", choices=("vivid", "natural"))
    imagine.add_argument("--moderation", choices=OPTION_VALUES["moderation"])
    imagine.add_argument("--frames", type=int, metavar="2-16", help="GIF output: frames")
    imagine.add_argument("--frame-ms", type=int, help="GIF output: milliseconds per frame")
    edit = commands.add_parser(
        "edit", help="edit images (or make one from several) into a directory"
    )
    edit.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="the first is edited")
    edit.add_argument("--prompt", required=True, help="what to change, or to make")
    edit.add_argument("--mask", type=Path, help="a PNG the first image's size; transparent = edit")
    edit.add_argument("--input-fidelity", choices=("high", "low"), help="some models only")
    _add_image_options(edit)
    return parser


def _add_image_options(command: argparse.ArgumentParser) -> None:
    """The options `imagine` and `edit` share."""
    command.add_argument("--model", help="a catalog model (default: DEFAULT_MODEL)")
    command.add_argument("--size", help="e.g. 1024x1024 (default: the model's)")
    command.add_argument("--quality", help="e.g. low, medium, high, xhigh, max")
    command.add_argument("--count", type=int, default=1, help="how many images (default 1)")
    command.add_argument("--background", choices=("transparent", "opaque", "auto"))
    command.add_argument("--output-format", choices=OPTION_VALUES["output_format"])
    command.add_argument("--output-compression", type=int, metavar="0-100")
    command.add_argument("--complexity", choices=OPTION_VALUES["complexity"])
    command.add_argument("--out", type=Path, default=Path("out"), help="directory (default out/)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = load_settings(require_discord=command in ("run", "sync"))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command in ("imagine", "edit", "check"):
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)-8s %(name)s: %(message)s"
        )
    if command == "imagine":
        return asyncio.run(_imagine(settings, args))
    if command == "edit":
        return asyncio.run(_edit(settings, args))
    if command == "check":
        return asyncio.run(_check(settings))
    if command == "migrate":
        return asyncio.run(_migrate(settings))
    if command == "usage":
        return asyncio.run(_usage(settings, args))
    if command == "health":
        return asyncio.run(_health(settings))
    from bot.app import run_bot  # Discord is imported only for the commands that need it

    return run_bot(settings, sync_only=command == "sync")


if __name__ == "__main__":
    sys.exit(main())
