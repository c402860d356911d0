from __future__ import annotations

import stat
from pathlib import Path

from bot.store.pseudonym import Pseudonymizer, load_or_create_secret


def test_pseudonyms_are_stable_distinct_and_keyed() -> None:
    one = Pseudonymizer(b"secret-one-0123456789")
    user = 1456074443980800007
    assert one.for_user(user) == one.for_user(user)
    assert one.for_user(user) != one.for_user(user + 1)
    assert str(user) not in one.for_user(user)
    assert Pseudonymizer(b"secret-two-0123456789").for_user(user) != one.for_user(user)
    assert "secret-one" not in repr(one)


def test_the_generated_secret_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "data")
    assert load_or_create_secret(tmp_path / "data") == first
    mode = (tmp_path / "data" / "user_id_secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_an_empty_or_short_secret_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "user_id_secret").write_bytes(b"")
    secret = load_or_create_secret(tmp_path)
    assert len(secret) >= 32
    assert (tmp_path / "user_id_secret").read_bytes() == secret
    assert [p.name for p in tmp_path.iterdir()] == ["user_id_secret"]  # no temporary left
