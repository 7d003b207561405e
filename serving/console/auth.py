"""Console users, passwords and sessions.

Users come from a YAML file (`users: [{username, password_hash}]`, argon2 hashes made by
`retention console add-user`) and/or the environment ($RETENTION_CONSOLE_USER with
$RETENTION_CONSOLE_PASSWORD_HASH). The file is read at each sign-in, so a user added to it can
sign in without a restart.

A session is a signed cookie (HMAC-SHA256 over user, expiry and a random nonce), so any
replica holding the same secret accepts it; signing out revokes the nonce in this process and
clears the cookie. Every form carries a CSRF token derived from the nonce of the session (or,
on the sign-in page, of a short-lived pre-session cookie), checked on every POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import DataError, config_error
from features.home import write_private

USER_ENV = "RETENTION_CONSOLE_USER"
HASH_ENV = "RETENTION_CONSOLE_PASSWORD_HASH"
SESSION_COOKIE = "retention_console"
PRE_COOKIE = "retention_console_pre"

_hasher = PasswordHasher()
# Verified against when the user is unknown, so that the answer takes as long either way.
_DUMMY = _hasher.hash(secrets.token_hex(16))


class ConsoleUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    password_hash: str = Field(pattern=r"^\$argon2(id|i|d)\$")


class UsersFile(BaseModel):
    """The console users file."""

    model_config = ConfigDict(extra="forbid")
    users: list[ConsoleUser] = []


def hash_password(password: str) -> str:
    """An argon2id hash of `password` for the users file or $RETENTION_CONSOLE_PASSWORD_HASH."""
    return _hasher.hash(password)


def read_users(path: Path | None) -> dict[str, str]:
    """username -> hash, from the file (when given) and the environment."""
    users: dict[str, str] = {}
    if path is not None and path.is_file():
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        try:
            parsed = UsersFile.model_validate(raw)
        except ValidationError as exc:
            raise config_error(exc, path) from None
        users.update({u.username: u.password_hash for u in parsed.users})
    name, hashed = os.environ.get(USER_ENV), os.environ.get(HASH_ENV)
    if name and hashed:
        users[name] = hashed
    return users


def add_user(path: Path, username: str, password: str) -> None:
    """Add or replace `username` in the users file (created if missing)."""
    user = ConsoleUser(username=username, password_hash=hash_password(password))
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    try:
        current = UsersFile.model_validate(raw or {})
    except ValidationError as exc:
        raise config_error(exc, path) from None
    kept = [u for u in current.users if u.username != username]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, yaml.safe_dump(UsersFile(users=[*kept, user]).model_dump(),
                                       sort_keys=False))


def new_nonce() -> str:
    """A random value naming one session or sign-in form."""
    return secrets.token_urlsafe(16)


def check_password(users: dict[str, str], username: str, password: str) -> bool:
    """True when `username` exists and `password` matches its hash."""
    hashed = users.get(username)
    try:
        return _hasher.verify(hashed or _DUMMY, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Session:
    user: str
    nonce: str
    expires: int


class Sessions:
    """Signs, reads and revokes session cookies; makes and checks CSRF tokens."""

    def __init__(self, secret: bytes, max_age_seconds: int) -> None:
        if len(secret) < 16:
            raise DataError("console secret: at least 16 bytes")
        self.secret = secret
        self.max_age = max_age_seconds
        self._revoked: dict[str, int] = {}
        self._lock = threading.Lock()

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def issue(self, user: str) -> tuple[str, Session]:
        session = Session(user, new_nonce(), int(time.time()) + self.max_age)
        payload = base64.urlsafe_b64encode(json.dumps(
            {"u": session.user, "n": session.nonce, "e": session.expires}).encode()).rstrip(b"=")
        return f"{payload.decode()}.{self._sign(payload)}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, None when absent, forged, expired or revoked."""
        if not cookie or "." not in cookie:
            return None
        payload, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(payload.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["u"]), str(data["n"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < time.time() or session.nonce in self._revoked:
            return None
        return session

    def revoke(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            self._revoked = {n: e for n, e in self._revoked.items() if e > now}
            self._revoked[session.nonce] = session.expires

    def csrf(self, nonce: str) -> str:
        return self._sign(f"csrf|{nonce}".encode())

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce and token) and hmac.compare_digest(self.csrf(nonce), token)
