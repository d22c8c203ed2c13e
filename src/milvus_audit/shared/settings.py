"""Where the shared state lives: the Redis URL, the deployment's key prefix and the block key.

The URL is a credential (it may carry a password): it is never written to a record, an
error message or Redis; `redacted()` is what may be shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from milvus_audit.config import SHARED_STATE_SCHEMES, AuditConfig
from milvus_audit.exceptions import ConfigError
from milvus_audit.integrity.chain import integrity_key
from milvus_audit.semconv import BLOCK_KEY_ENV, REDIS_PREFIX_ENV, REDIS_URL_ENV

DEFAULT_PREFIX = "milvus-audit"


@dataclass(frozen=True)
class SharedSettings:
    url: str = field(repr=False)
    prefix: str
    block_key: bytes | None = field(repr=False)

    def redacted(self) -> str:
        return redacted(self.url)


def redacted(url: str) -> str:
    """scheme://host:port/db, without user name or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "(unparseable URL)"


def _with_credentials(url: str, env_url: str | None) -> str:
    """`url` as given; when it names no credentials and MILVUS_AUDIT_REDIS_URL names the same
    server with some, theirs (so code can say where Redis is and the environment who we are)."""
    if not env_url:
        return url
    mine, theirs = urlsplit(url), urlsplit(env_url)
    if mine.username or mine.password or not (theirs.username or theirs.password):
        return url
    if (mine.scheme, mine.hostname, mine.port) != (theirs.scheme, theirs.hostname, theirs.port):
        return url
    netloc = theirs.netloc.rpartition("@")[0] + "@" + mine.netloc
    return urlunsplit((mine.scheme, netloc, mine.path, mine.query, mine.fragment))


def shared_settings(config: AuditConfig) -> SharedSettings | None:
    """The shared state `config` asks for, or None (see `AuditConfig.shared_state`)."""
    setting = config.shared_state
    env_url = os.environ.get(REDIS_URL_ENV) or None
    if setting is False:
        return None
    if setting is None or setting is True:
        if env_url is None:
            if setting is True:
                raise ConfigError(f"AuditConfig(shared_state=True) takes the Redis URL from {REDIS_URL_ENV}, "
                                  "which is not set")
            return None
        url = env_url
    else:
        url = _with_credentials(setting, env_url)
    if not url.startswith(SHARED_STATE_SCHEMES):
        raise ConfigError(f"{REDIS_URL_ENV} must be a redis://, rediss:// or unix:// URL")
    prefix = config.shared_state_prefix or os.environ.get(REDIS_PREFIX_ENV) or DEFAULT_PREFIX
    return SharedSettings(url, prefix, _block_key(config))


def _block_key(config: AuditConfig) -> bytes | None:
    configured = config.block_key
    try:
        if isinstance(configured, bytes):
            return configured
        if isinstance(configured, str):
            return bytes.fromhex(configured)
        env = os.environ.get(BLOCK_KEY_ENV)
        if env:
            return bytes.fromhex(env)
        return integrity_key(config.integrity_key)
    except ValueError:
        raise ConfigError(f"the block key (AuditConfig.block_key or {BLOCK_KEY_ENV}) must be hex") from None
