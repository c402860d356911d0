"""Configuration: one sentence naming the variable, never a secret, never a traceback."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import tomllib
from pathlib import Path

import pytest
from limits.aio.storage import (
    MemcachedStorage,
    MongoDBStorage,
    MovingWindowSupport,
    RedisClusterStorage,
    RedisSentinelStorage,
    RedisStorage,
)

from bot import config
from bot.config import DEFAULT_BASE_URL, ConfigError, load_settings

SECRET_KEY = "sk-config-SENTINEL-0123456789"
TOKEN = "discord-SENTINEL-token-abcdef"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py has already cleared every setting and moved into an empty directory.
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)


def error_for(**env: str) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            load_settings()
    message = str(caught.value)
    assert SECRET_KEY not in message and TOKEN not in message
    assert "\n" not in message and "Traceback" not in message
    return message


def test_defaults() -> None:
    settings = load_settings()
    assert settings.openai_base_url == DEFAULT_BASE_URL
    assert [str(limit) for limit in settings.user_rate_limit] == ["5 per 1 hour"]
    assert settings.offered()[0] == "gpt-image-2.5-flare"
    assert settings.catalog[settings.default_model].is_live
    assert "dall-e-3" in settings.offered()
    assert settings.connect_timeout == 10
    assert settings.allow_private_image_urls is False


def test_a_gateway_on_the_same_network_may_be_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_PRIVATE_IMAGE_URLS", "true")
    monkeypatch.setenv("CONNECT_TIMEOUT", "2.5")
    settings = load_settings()
    assert settings.allow_private_image_urls is True
    assert settings.connect_timeout == 2.5


def test_secrets_are_masked_in_repr() -> None:
    settings = load_settings()
    assert SECRET_KEY not in repr(settings) and TOKEN not in repr(settings)
    assert SECRET_KEY not in str(settings)


def test_trailing_slash_and_several_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1/")
    monkeypatch.setenv("USER_RATE_LIMIT", "2/minute;20/day")
    settings = load_settings()
    assert settings.openai_base_url == "https://gateway.example/v1"
    assert len(settings.user_rate_limit) == 2


def test_a_base_url_keeps_its_query_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gw.example/v1/?api-version=2025-01-01")
    assert load_settings().openai_base_url == "https://gw.example/v1?api-version=2025-01-01"


def test_a_base_url_with_credentials_is_refused_without_repeating_them() -> None:
    message = error_for(OPENAI_BASE_URL="http://operator:hunter2-SENTINEL@gw.example/v1")
    assert message == (
        "OPENAI_BASE_URL is not valid: it must not contain a user name or password; "
        "send credentials with OPENAI_API_KEY."
    )
    assert error_for(OPENAI_BASE_URL="https://operator@gw.example/v1") == message


def test_a_base_url_with_a_fragment_is_refused() -> None:
    assert error_for(OPENAI_BASE_URL="https://gw.example/v1#images") == (
        "OPENAI_BASE_URL is not valid: it must not contain a fragment (a part after #)."
    )


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    (tmp_path / ".env").write_text("OPENAI_API_KEY=from-dotenv\nDEFAULT_MODEL=dall-e-3\n")
    settings = load_settings()
    assert settings.openai_api_key.get_secret_value() == "from-dotenv"
    assert settings.default_model == "dall-e-3"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL is not valid: it must be an http(s) URL"),
        ({"USER_RATE_LIMIT": "lots"}, "USER_RATE_LIMIT is not valid: it must be limits in"),
        ({"REQUEST_TIMEOUT": "soon"}, "REQUEST_TIMEOUT is not valid: it must be seconds"),
        ({"CONNECT_TIMEOUT": "0"}, "CONNECT_TIMEOUT is not valid: it must be seconds to open"),
        ({"CONNECT_TIMEOUT": "121"}, "CONNECT_TIMEOUT is not valid"),
        (
            {"ALLOW_PRIVATE_IMAGE_URLS": "maybe"},
            "ALLOW_PRIVATE_IMAGE_URLS is not valid: it must be true or false",
        ),
        ({"MAX_IMAGES_PER_REQUEST": "11"}, "MAX_IMAGES_PER_REQUEST is not valid"),
        ({"DEFAULT_MODEL": "dall-e-9"}, "DEFAULT_MODEL is not valid: 'dall-e-9' is not in"),
        ({"OFFERED_MODELS": "dall-e-3,nope"}, "OFFERED_MODELS is not valid: nope not in"),
        ({"RATE_LIMIT_STORAGE_URI": "sqlite://x"}, "RATE_LIMIT_STORAGE_URI is not valid"),
        ({"USER_ID_SECRET": "short"}, "USER_ID_SECRET is not valid: it must be a random string"),
        ({"IMAGE_MODELS_FILE": "/nonexistent/models.toml"}, "IMAGE_MODELS_FILE: cannot read"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL is not valid"),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], names: str) -> None:
    assert names in error_for(**env)


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        (
            {"USER_RATE_LIMIT": "0/minute"},
            "USER_RATE_LIMIT is not valid: 0 per 1 minute lets no request through; "
            "every limit must allow at least 1.",
        ),
        (
            {"USER_RATE_LIMIT": "5/hour;1/0 seconds"},
            "USER_RATE_LIMIT is not valid: '1/0 seconds' has a window of 0 seconds; "
            "the number before the unit must be at least 1.",
        ),
        (
            {"MAX_RESPONSE_MB": "1e-9"},
            "MAX_RESPONSE_MB is not valid: it must be megabytes, at least 1 and at most 2048, "
            "and no less than MAX_IMAGE_MB.",
        ),
        (
            {"MAX_IMAGE_MB": "0.01"},
            "MAX_IMAGE_MB is not valid: it must be megabytes, at least 0.1 and at most 512.",
        ),
        (
            {"MAX_IMAGE_MB": "64", "MAX_RESPONSE_MB": "48"},
            "MAX_RESPONSE_MB is not valid: it must be no less than MAX_IMAGE_MB (64), "
            "since a response carries whole images.",
        ),
        (
            {"OFFERED_MODELS": "dall-e-3,gpt-image-1,dall-e-3"},
            "OFFERED_MODELS is not valid: dall-e-3 is listed more than once.",
        ),
    ],
)
def test_values_that_would_disable_the_bot_are_refused(env: dict[str, str], sentence: str) -> None:
    assert error_for(**env) == sentence


@pytest.mark.parametrize("key", ["Q", "Zq9-x!7"])
def test_a_short_key_is_refused_without_repeating_it(key: str) -> None:
    message = error_for(OPENAI_API_KEY=key)
    assert message == "OPENAI_API_KEY is not valid: it must be at least 8 characters long."
    assert key not in message.removeprefix("OPENAI_API_KEY")


@pytest.mark.parametrize(
    ("uri", "extra"),
    [
        ("redis://localhost:6379", "redis"),
        ("rediss://:pw-SENTINEL@cache.example:6380", "redis"),
        ("redis+sentinel://localhost:26379/mymaster", "redis"),
        ("redis+cluster://localhost:7000,localhost:7001", "redis"),
        ("mongodb://localhost:27017", "mongodb"),
    ],
)
def test_a_shared_store_without_its_extra_is_refused_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, uri: str, extra: str
) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: False)
    scheme = uri.split("://")[0]
    assert error_for(RATE_LIMIT_STORAGE_URI=uri) == (
        f"RATE_LIMIT_STORAGE_URI is not usable: {scheme}:// needs the {extra} extra "
        f'(pip install "imagine-bot[{extra}]").'
    )


def test_a_shared_store_with_its_extra_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)
    monkeypatch.setenv("RATE_LIMIT_STORAGE_URI", "redis://localhost:6379/2")
    assert load_settings().rate_limit_storage_uri == "redis://localhost:6379/2"


def test_the_password_of_a_store_stays_out_of_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)
    monkeypatch.setenv("RATE_LIMIT_STORAGE_URI", "redis://:hunter2-SENTINEL@cache.example:6379")
    assert "hunter2" not in repr(load_settings())


def test_memcached_is_refused_because_it_keeps_no_moving_window() -> None:
    assert error_for(RATE_LIMIT_STORAGE_URI="memcached://localhost:11211") == (
        "RATE_LIMIT_STORAGE_URI is not usable: memcached:// keeps no moving window, which the "
        "per-user limits use; use redis:// or mongodb://."
    )


def test_the_shared_stores_agree_with_limits_and_have_an_extra() -> None:
    """What the bot checks before start-up is what limits' storage classes will import."""
    storages = (RedisStorage, RedisSentinelStorage, RedisClusterStorage, MongoDBStorage)
    by_scheme = {scheme: kind for kind in storages for scheme in kind.STORAGE_SCHEME or ()}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    for scheme, (extra, modules) in config.SHARED_STORES.items():
        storage = by_scheme[f"async+{scheme}"]
        assert issubclass(storage, MovingWindowSupport)
        implementation = inspect.signature(storage.__init__).parameters.get("implementation")
        needed = {name.split(".")[0] for name in storage.DEPENDENCIES}
        if implementation is not None:  # the redis family: only the default client is needed
            needed = {implementation.default}
        assert set(modules) == needed, scheme
        assert any(f"limits[async-{extra}]" in spec for spec in extras[extra]), extra
    assert not issubclass(MemcachedStorage, MovingWindowSupport)


def test_an_unusable_data_dir_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    message = error_for(DATA_DIR=str(tmp_path / "a-file" / "data"))
    assert message.startswith("DATA_DIR is not valid: it must be a writable directory")


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    assert error_for().startswith("OPENAI_API_KEY is not set: it must be the API key")


def test_missing_token_only_matters_for_the_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCORD_TOKEN")
    assert error_for().startswith("DISCORD_TOKEN is not set")
    assert load_settings(require_discord=False).discord_token is None


def test_every_missing_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("DISCORD_TOKEN")
    assert error_for() == (
        "DISCORD_TOKEN and OPENAI_API_KEY are not set: DISCORD_TOKEN must be the bot token from "
        "the Discord developer portal, and OPENAI_API_KEY must be the API key of the OpenAI "
        "account or gateway (sent as a Bearer token)."
    )


def test_missing_and_malformed_variables_are_named_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    message = error_for(LOG_LEVEL="LOUD", REQUEST_TIMEOUT="soon")
    assert message.startswith("OPENAI_API_KEY is not set: it must be the API key")
    assert "; REQUEST_TIMEOUT is not valid: it must be seconds" in message
    assert "; LOG_LEVEL is not valid: it must be one of DEBUG" in message


def test_every_model_the_catalog_lacks_is_named_at_once() -> None:
    message = error_for(DEFAULT_MODEL="dall-e-9", OFFERED_MODELS="dall-e-3,nope")
    assert message.startswith("DEFAULT_MODEL is not valid: 'dall-e-9' is not in the model catalog")
    assert "; OFFERED_MODELS is not valid: nope not in the model catalog" in message


def test_models_file_adds_a_gateway_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."my-gateway-image"]\nbase = "gpt-image-1"\nmax_count = 2\n')
    monkeypatch.setenv("IMAGE_MODELS_FILE", str(path))
    monkeypatch.setenv("DEFAULT_MODEL", "my-gateway-image")
    settings = load_settings()
    assert settings.catalog["my-gateway-image"].max_count == 2
    assert settings.offered()[0] == "my-gateway-image"


def test_a_bad_models_file_names_the_model_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."x"]\nbase = "dall-e-2"\ndefault_size = "999x999"\n')
    message = error_for(IMAGE_MODELS_FILE=str(path))
    assert "models.x" in message and "default_size" in message


DEAR_IMAGE = """
[models.dear]
base = "dall-e-2"
[models.dear.price]
as_of = 2026-01-01
per_image = {{ "standard:256x256" = {price}, "standard:512x512" = 0.018, \
  "standard:1024x1024" = 0.02 }}
"""
LONG_PROMPTS = """
[models.long]
base = "gpt-image-1"
max_prompt_chars = {chars}
[models.long.price]
as_of = 2026-01-01
text_input_per_million = 5.0
image_input_per_million = 10.0
image_output_per_million = 40.0
"""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (DEAR_IMAGE.format(price="1e9"), "models.dear: price.per_image.standard:256x256: Input "
         "should be less than or equal to 10000"),
        (DEAR_IMAGE.format(price="1001"), "models.dear: price: one request could cost more than "
         "$10,000 at these prices, the most the bot records for one request"),
        (LONG_PROMPTS.format(chars=10**12), "models.long: price: one request could cost more "
         "than $10,000"),
        # A prompt reserves a text token per UTF-8 byte, up to 4 a character: a billion
        # characters of emoji reserve $20,000 at $5 per 1M (they passed as a quarter-token each).
        (LONG_PROMPTS.format(chars=10**9), "models.long: price: one request could cost more "
         "than $10,000"),
    ],
)  # fmt: skip
def test_a_price_the_ledger_could_not_record_stops_start_up(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    message = error_for(IMAGE_MODELS_FILE=str(path))
    assert message.startswith(f"IMAGE_MODELS_FILE: {path}") and says in message


def test_an_error_says_what_the_variable_accepts_not_the_rest_of_its_documentation() -> None:
    # The description goes on to explain the variable (for the reference and .env.example);
    # the sentence at start-up keeps to what it accepts.
    assert error_for(MAX_RETRIES="9") == "MAX_RETRIES is not valid: it must be a whole number 0-5."
    assert error_for(DATA_DIR="/proc/none/x").startswith(
        "DATA_DIR is not valid: it must be a writable directory ("
    )


async def test_the_tests_ignore_the_operators_environment_and_dotenv(tmp_path: Path) -> None:
    """An operator who exports bot settings, or keeps a .env, can still run the suite."""
    hostile = {
        "DEFAULT_MODEL": "nonsense",
        "MAX_IMAGES_PER_REQUEST": "1",
        "MAX_CONCURRENT_GENERATIONS": "0",
        "log_level": "LOUD",  # the settings read variable names in any case
        "OPENAI_BASE_URL": "ftp://operator.example",
    }
    (tmp_path / ".env").write_text("MAX_RETRIES=99\nSHUTDOWN_GRACE_SECONDS=never\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
        str(ROOT / "tests" / "bot" / "test_config.py"), "-k", "not ignore_the_operators",
        cwd=tmp_path, env=os.environ | hostile | {"PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, out.decode()[-3000:]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ('sizes = ["0x0"]\ndefault_size = "0x0"', "size '0x0' must have sides from 1 to 16384"),
        (
            'sizes = ["99999x99999"]\ndefault_size = "99999x99999"',
            "size '99999x99999' must have sides from 1 to 16384",
        ),
        (f'qualities = ["{"q" * 101}"]\ndefault_quality = "{"q" * 101}"', "at most 100 characters"),
    ],
)
def test_catalog_values_discord_or_the_api_would_refuse_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, says: str
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models."odd"]\nbase = "gpt-image-1.5"\n{entry}\n')
    message = error_for(IMAGE_MODELS_FILE=str(path))
    assert message.startswith("IMAGE_MODELS_FILE")
    assert says in message


def test_a_model_name_longer_than_a_discord_choice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models."{"m" * 101}"]\nbase = "gpt-image-1.5"\n')
    message = error_for(IMAGE_MODELS_FILE=str(path))
    assert message.startswith("IMAGE_MODELS_FILE") and "at most 100 characters" in message


def test_a_models_file_that_is_not_utf8_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_bytes(b'[models."caf\xe9"]\nbase = "gpt-image-1.5"\n')
    message = error_for(IMAGE_MODELS_FILE=str(path))
    assert message.startswith("IMAGE_MODELS_FILE") and "is not UTF-8 text" in message


# -- found by review: odd values an operator will write ----------------------------------------


@pytest.mark.parametrize(
    "uri", ["redis://:hunter2#x@127.0.0.1:1", "redis://:hunter2@127.0.0.1:abc", "redis://:pw@"]
)
def test_a_store_uri_that_cannot_be_read_is_a_sentence_without_its_password(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)
    message = error_for(RATE_LIMIT_STORAGE_URI=uri)
    assert message.startswith("RATE_LIMIT_STORAGE_URI is not valid: the URI cannot be read")
    assert "hunter2" not in message and "pw" not in message


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("rediss://u:pa/ss@h:1", "rediss://u:***@h:1"),
        ("redis://:p@ss@h:1/0", "redis://:***@h:1/0"),
        ("redis://h:1?password=hunter2&db=1", "redis://h:1?password=***&db=1"),
        ("mongodb://h:1/?authSecret=s3cr3t", "mongodb://h:1/?authSecret=***"),
    ],
)
def test_store_credentials_are_masked_however_written(uri: str, shown: str) -> None:
    from bot.store.ratelimit import masked_storage_uri

    assert masked_storage_uri(uri) == shown


def test_a_key_saved_with_a_windows_line_end_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY + "\r")
    assert load_settings().openai_api_key.get_secret_value() == SECRET_KEY
    message = error_for(OPENAI_API_KEY="sk-abc def-0123456789")
    assert message == (
        "OPENAI_API_KEY is not valid: it must not contain spaces or control characters."
    )


def test_a_dotenv_that_is_not_utf8_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"DEFAULT_MODEL=caf\xe9\n")
    assert error_for() == ".env is not valid: it must be UTF-8 text."


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:0/v1", "http://127.0.0.1:99999/v1", "http://gw.example/v 1"]
)
def test_a_base_url_that_cannot_be_reached_is_refused_at_start(url: str) -> None:
    assert error_for(OPENAI_BASE_URL=url).startswith("OPENAI_BASE_URL is not valid")


def test_a_limit_whose_window_outlives_a_calendar_is_refused() -> None:
    message = error_for(USER_RATE_LIMIT="1/99999999999999 years")
    assert "has a window longer than 10 years" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[models.x]\nbase = ["gpt-image-1.5"]\n', "models.x: base must be the name of a model"),
        ('[models.a]\nbase = "b"\n', "models.a: its bases go round in a cycle (a -> b -> a)"),
        ('[models.x]\nbase = "gpt-image-1.5"\nmax_count = "3"\n', "max_count"),
        (
            '[models.x]\nbase = "gpt-image-2"\nfree_size = { max_edge = 0, max_pixels = 9 }\n',
            "free_size.max_edge",
        ),
    ],
)
def test_odd_models_files_are_one_clear_sentence(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "models.toml"
    text += '[models.b]\nbase = "a"\n' if "cycle" in says else ""
    path.write_text(text)
    message = error_for(IMAGE_MODELS_FILE=str(path))
    assert message.startswith("IMAGE_MODELS_FILE") and says in message


def test_a_base_may_come_later_in_the_file_and_a_bom_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "models.toml"
    text = '[models.a]\nbase = "b"\nmax_count = 2\n[models.b]\nbase = "gpt-image-1.5"\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    monkeypatch.setenv("IMAGE_MODELS_FILE", str(path))
    catalog = load_settings().catalog
    assert catalog["a"].max_count == 2 and catalog["a"].sizes == catalog["gpt-image-1.5"].sizes


def test_too_many_choices_say_the_default_counts(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("".join(f'[models."m{i}"]\nbase = "gpt-image-1.5"\n' for i in range(25)))
    offered = ",".join(f"m{i}" for i in range(25))
    message = error_for(IMAGE_MODELS_FILE=str(path), OFFERED_MODELS=offered)
    assert "with DEFAULT_MODEL, which is always offered, it makes 26 choices" in message


# -- the ledger's database -------------------------------------------------------------------------


def test_the_database_is_a_file_in_the_data_dir_by_default(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.database == f"sqlite+aiosqlite:///{(Path('data') / 'imagine.db').resolve()}"


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("sqlite:////srv/imagine.db", "sqlite+aiosqlite:////srv/imagine.db"),
        (
            "postgresql://bot:pw@db.example/imagine",
            "postgresql+asyncpg://bot:pw@db.example/imagine",
        ),
        ("postgres://db.example:5433/imagine", "postgresql+asyncpg://db.example:5433/imagine"),
        ("postgresql+asyncpg://db.example/imagine", "postgresql+asyncpg://db.example/imagine"),
    ],
)
def test_database_urls_are_given_their_async_driver(
    monkeypatch: pytest.MonkeyPatch, url: str, normalised: str
) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings().database == normalised


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        (
            "mysql://db.example/imagine",
            "DATABASE_URL is not valid: it must be a sqlite:///PATH URL",
        ),
        ("sqlite://", "DATABASE_URL is not valid: a SQLite URL must name a file"),
        ("postgresql://db.example", "DATABASE_URL is not valid: it must name the database"),
    ],
)
def test_a_database_url_the_ledger_cannot_use_is_one_sentence(url: str, sentence: str) -> None:
    assert error_for(DATABASE_URL=url).startswith(sentence)


def test_postgresql_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: False)
    assert error_for(DATABASE_URL="postgresql://db.example/imagine") == (
        "DATABASE_URL is not usable: postgresql:// needs the postgres extra "
        '(pip install "imagine-bot[postgres]").'
    )


def test_the_database_password_stays_out_of_the_repr_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "_installed", lambda module: True)
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:hunter2-SENTINEL@db.example/imagine")
    assert "hunter2" not in repr(load_settings())
    assert "hunter2" not in error_for(DATABASE_URL="mysql://bot:hunter2-SENTINEL@db/imagine")


def test_blocked_words_and_the_moderation_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKED_WORDS", " dragon, blood moon ,,dragon")
    monkeypatch.setenv("MODERATION_CHECK", "Strict")
    settings = load_settings()
    assert settings.blocked_words == ("dragon", "blood moon")
    assert settings.moderation_check == "strict"
    assert error_for(MODERATION_CHECK="sometimes") == (
        "MODERATION_CHECK is not valid: it must be off, on or strict."
    )
    assert "'!!!' has no letters or digits" in error_for(BLOCKED_WORDS="dragon, !!!")
