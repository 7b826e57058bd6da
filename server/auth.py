"""API keys and roles.

A client presents a key in the ``APIKey`` header or as ``Authorization: Bearer <key>``; no key
means the ``guest`` role. Keys are stored only as HMAC-SHA256(pepper, key) in a keys file
(TOML or JSON), each with a public id (for logs and rate limits) and a role. The presented
key is hashed once and compared with every stored hash using :func:`hmac.compare_digest`,
without stopping at a match, so timing reveals neither which key matched nor how much of a
hash did. A present but unknown key is 401, never a silent downgrade to guest.

Keys are random 256-bit tokens, so a fast keyed hash is enough (no password stretching); the
pepper (setting ``api_key_pepper``) is a server secret, so a leaked keys file alone cannot be
used to test guesses offline.

Keys file::

    [[key]]
    id = "ons-mapping-team"
    role = "registered"          # registered | prerelease | admin
    hash = "hmac-sha256:5d41…"    # from `python -m server.auth new --id … --role …`

This module imports nothing from Flask: it takes anything with a header ``get``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from cube.errors import ConfigError, UnauthorizedError

HASH_PREFIX = "hmac-sha256:"


class Headers(Protocol):
    """Case-insensitive header lookup (werkzeug's Headers, or a dict in tests)."""

    def get(self, key: str) -> str | None: ...


class Role(StrEnum):
    GUEST = "guest"
    REGISTERED = "registered"
    PRERELEASE = "prerelease"
    ADMIN = "admin"

    @property
    def embargo_exempt(self) -> bool:
        """Pre-release access: may see releases before their publication time."""
        return self in (Role.PRERELEASE, Role.ADMIN)


@dataclass(frozen=True)
class Principal:
    role: Role
    key_id: str | None = None

    @property
    def rate_key(self) -> str | None:
        return None if self.key_id is None else f"key:{self.key_id}"


GUEST = Principal(Role.GUEST)


@dataclass(frozen=True)
class KeyEntry:
    id: str
    role: Role
    digest: bytes


def hash_key(key: str, pepper: bytes) -> str:
    return HASH_PREFIX + hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()


def presented_key(headers: Headers) -> str | None:
    """The key a request presents, or None. Raises 401 for a malformed presentation."""
    api_key = headers.get("APIKey")
    auth = headers.get("Authorization")
    bearer = None
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthorizedError("the Authorization header must be 'Bearer <key>'",
                                    parameter="Authorization",
                                    hint="or send the key in the APIKey header")
        bearer = value.strip()
    if api_key is not None and not api_key.strip():
        raise UnauthorizedError("the APIKey header is empty", parameter="APIKey")
    if api_key is not None and bearer is not None and api_key.strip() != bearer:
        raise UnauthorizedError("APIKey and Authorization headers carry different keys",
                                parameter="APIKey")
    return (api_key or "").strip() or bearer


class KeyStore:
    def __init__(self, entries: Sequence[KeyEntry], pepper: bytes) -> None:
        self.entries = tuple(entries)
        self.pepper = pepper

    @classmethod
    def empty(cls) -> KeyStore:
        return cls((), b"")

    @classmethod
    def load(cls, path: str | Path, pepper: str | None) -> KeyStore:
        if not pepper or len(pepper) < 16:
            raise ConfigError("api_key_pepper (STATCUBE_API_KEY_PEPPER) must be set to at least "
                              "16 characters when an API keys file is used")
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            raw: Any = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"cannot read API keys file {p}: {exc.strerror}") from None
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"API keys file {p} does not parse: {exc}") from None
        items = raw.get("key", raw.get("keys", [])) if isinstance(raw, Mapping) else raw
        if not isinstance(items, list):
            raise ConfigError(f"API keys file {p}: expected [[key]] tables")
        entries = []
        for i, item in enumerate(items):
            at = f"API keys file {p}, key {i + 1}"
            if not isinstance(item, Mapping) or set(item) != {"id", "role", "hash"}:
                raise ConfigError(f"{at}: needs exactly id, role and hash")
            try:
                role = Role(item["role"])
            except ValueError:
                raise ConfigError(f"{at}: role must be registered, prerelease or admin") from None
            digest = str(item["hash"])
            if role is Role.GUEST or not digest.startswith(HASH_PREFIX) or \
                    len(digest) != len(HASH_PREFIX) + 64:
                raise ConfigError(f"{at}: role must not be guest and hash must be "
                                  f"'{HASH_PREFIX}' + 64 hex digits")
            entries.append(KeyEntry(str(item["id"]), role, digest.encode("ascii")))
        ids = [e.id for e in entries]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"API keys file {p}: key ids must be unique")
        return cls(entries, pepper.encode("utf-8"))

    def lookup(self, key: str) -> KeyEntry | None:
        """Constant-time over all entries: every stored hash is compared."""
        digest = hash_key(key, self.pepper).encode("ascii")
        found = None
        for e in self.entries:
            if hmac.compare_digest(digest, e.digest):
                found = e
        return found

    def authenticate(self, headers: Headers) -> Principal:
        """Guest without a key; the key's role with a known key; 401 otherwise."""
        key = presented_key(headers)
        if key is None:
            return GUEST
        entry = self.lookup(key) if self.entries else None
        if entry is None:
            raise UnauthorizedError("the API key is not valid", parameter="APIKey",
                                    hint="omit the key to use the API as a guest")
        return Principal(entry.role, entry.id)

    def role_for_limits(self, headers: Headers) -> Principal:
        """Like :meth:`authenticate` but never raises: bad keys are limited as guests (by
        IP), so guessing keys is rate-limited too."""
        try:
            return self.authenticate(headers)
        except UnauthorizedError:
            return GUEST


def new_key() -> str:
    return "sc_" + secrets.token_urlsafe(32)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.auth new --id ID --role ROLE``: print a new key and its entry."""
    p = argparse.ArgumentParser(prog="python -m server.auth", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    n = sub.add_parser("new", help="make a key; give the key to its user, the entry to the file")
    n.add_argument("--id", required=True)
    n.add_argument("--role", required=True, choices=[r.value for r in Role if r != Role.GUEST])
    args = p.parse_args(argv)
    pepper = os.environ.get("STATCUBE_API_KEY_PEPPER", "")
    if len(pepper) < 16:
        print("set STATCUBE_API_KEY_PEPPER (16+ characters) first", file=sys.stderr)
        return 2
    key = new_key()
    print(f"key (give to the user; not stored anywhere): {key}", file=sys.stderr)
    print(f'[[key]]\nid = "{args.id}"\nrole = "{args.role}"\n'
          f'hash = "{hash_key(key, pepper.encode())}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
