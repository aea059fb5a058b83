"""API keys: who may call the server, and whose documents a request sees.

A keys file holds one key per line, optionally after an owner name (`alice  sk-...`): documents belong to the
owner, so a key can be replaced without losing them. Blank lines and lines starting with `#` are skipped. Keys are
kept only as SHA-256 digests in memory. Without keys the server is for this machine alone: it binds only a
loopback address and answers only loopback clients (`LOCAL_OWNER` owns every document).
"""

import hashlib
import ipaddress
from pathlib import Path

LOCAL_OWNER = "local"
MIN_KEY_CHARS = 16
LOOPBACK_NAMES = ("localhost",)


class Unauthorized(Exception):
    """The request carries no key, or one the server does not know."""


class NotLocal(Exception):
    """A server without keys was called from another machine."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_api_keys(path: str | Path) -> dict[str, str]:
    """key -> owner, from a keys file (see the module docstring).

    Raises:
        `ValueError` naming the line of a key that is too short, a line with more than two fields, or a file
        without keys.
    """
    keys = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) > 2:
            raise ValueError(f"{path}:{number}: expected `KEY` or `OWNER KEY`, got {len(words)} fields")
        keys[words[-1]] = words[0] if len(words) == 2 else None
    if not keys:
        raise ValueError(f"{path} holds no API key: write one key per line (`OWNER KEY` names its owner)")
    return keys


class KeyRing:
    """The keys a server accepts (`None`: no keys, loopback only), as digests mapped to their owners.

    Args:
        api_keys (`dict`, *optional*): key -> owner name (an owner of `None` is named after the key's digest).
    """

    def __init__(self, api_keys: dict[str, str | None] | None):
        self.open = not api_keys
        self._owners = {}
        for key, owner in (api_keys or {}).items():
            if not isinstance(key, str) or len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
                raise ValueError(
                    f"API keys must be at least {MIN_KEY_CHARS} characters without spaces (one is "
                    f"{len(key) if isinstance(key, str) else type(key).__name__}): make longer, random keys"
                )
            self._owners[digest(key)] = owner or f"key-{digest(key)[:12]}"

    def owner(self, authorization: str | None, client_host: str | None) -> str:
        """The owner a request acts for, from its `Authorization: Bearer KEY` header.

        Raises:
            `Unauthorized` with the reason.
        """
        if self.open:
            if not is_loopback(client_host):
                raise NotLocal("this server has no API keys: it answers only clients on the same machine")
            return LOCAL_OWNER
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key: send the header `Authorization: Bearer KEY`")
        owner = self._owners.get(digest(key.strip()))
        if owner is None:
            raise Unauthorized("unknown API key")
        return owner


def is_loopback(host: str | None) -> bool:
    """Whether `host` (an address or name) is this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyRing) -> None:
    """Refuses to listen beyond this machine without API keys."""
    if keys.open and not is_loopback(host):
        raise ValueError(
            f"--host {host} without --api-keys would let anyone on the network use this server: pass --api-keys FILE "
            "(one key per line), or bind --host 127.0.0.1"
        )
