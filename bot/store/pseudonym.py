"""Stable pseudonyms for Discord users: what the image API's `user` field carries, and what log
lines above DEBUG name members and servers by.

The raw Discord id never leaves for the image API; a keyed hash (HMAC-SHA256) of it does, so the
API provider can tell users apart for abuse monitoring while only this bot can map them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
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

    def for_server(self, guild_id: int) -> str:
        """A server's, for log lines: keyed apart from users' (a server id is never a user's)."""
        message = f"server:{guild_id}".encode()
        return f"server-{hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:16]}"


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
    # Written whole under a unique name (mkstemp: owner-only), then put in place: a crash never
    # leaves a partial secret, and two processes starting together end up with the same one.
    descriptor, partial = tempfile.mkstemp(dir=data_dir, prefix=".user_id_secret.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_hex(32).encode())
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.replace(partial, path)  # the one there is too short to be a key
        else:
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)  # creates it only if nobody else has meanwhile
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    log.info("generated a new user pseudonym secret in %s", path)
    return path.read_bytes().strip()
