"""Stable pseudonyms for Discord users: what the image API's `user` field carries.

The raw Discord id never leaves for the image API; a keyed hash (HMAC-SHA256) of it does, so the
API provider can tell users apart for abuse monitoring while only this bot can map them back.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_FILE = "user_id_secret"  # noqa: S105 (a file name, not a secret)


class Pseudonymizer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "Pseudonymizer(<secret>)"

    def for_user(self, user_id: int) -> str:
        digest = hmac.new(self._secret, str(user_id).encode(), hashlib.sha256).hexdigest()
        return f"discord-{digest[:32]}"


MIN_SECRET_BYTES = 16


def load_or_create_secret(data_dir: Path) -> bytes:
    """The secret kept in ``data_dir``, created (readable by the owner only) on first use.

    A file too short to be a key (an empty one, say) is replaced: an empty HMAC key would make
    every pseudonym computable from the public user id.
    """
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        secret = b""
    if len(secret) >= MIN_SECRET_BYTES:
        return secret
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    # Written whole under another name, then renamed: a crash never leaves a partial secret.
    partial = path.with_suffix(".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    log.info("generated a new user pseudonym secret in %s", path)
    return secret
