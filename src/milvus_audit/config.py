"""`AuditConfig`: what an audited client records and where it sends it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from milvus_audit.exceptions import ConfigError

if TYPE_CHECKING:  # type-only: these layers sit above config and are never imported from here at run time
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from milvus_audit.auditing.gates import Durable
    from milvus_audit.detect.engine import Alert
    from milvus_audit.detect.rules import Rules
    from milvus_audit.respond.playbook import Playbook

AlertCallback = Callable[["Alert"], object]


def _is_hex(text: str) -> bool:
    try:
        return bool(bytes.fromhex(text.strip()))
    except ValueError:
        return False

CaptureFilters = Literal["sanitized", "raw", "none"]
_CAPTURE_FILTERS = ("sanitized", "raw", "none")


@dataclass
class AuditConfig:
    """Settings of an audited client. Every field has a safe default.

    - `tracer_provider`, `logger_provider`, `meter_provider`: None means the global one.
    - `capture_filters`: `"sanitized"` records filter expressions with literals
      replaced by `?`; `"raw"` records them verbatim (opt-in: literals may be
      personal data); `"none"` records no filter text at all.
    - `credential_key`: key for `milvus_audit.auth.credential_id`, the keyed
      fingerprint of token/API-key credentials. Falls back to the
      `MILVUS_AUDIT_CREDENTIAL_KEY` environment variable (hex), then to a random
      per-process key (fingerprints are then stable only within the process).
    - `detection`: True for the built-in rules, a `milvus_audit.detect.Rules`, or a
      path to a YAML rules file.
    - `on_alert`: callables invoked with each alert.
    - `playbooks`: `milvus_audit.respond.Playbook`s run when alerts fire (a YAML
      rules file given as `detection` may carry more).
    - `integrity_key`: HMAC key (bytes, hex, or a key file's path) for the tamper-evident chain; falls back
      to `MILVUS_AUDIT_INTEGRITY_KEY` (hex). With neither, the chain is off.
    - `signing_key`: Ed25519 private key (object or PEM path) for signed checkpoints
      every `checkpoint_every` records or `checkpoint_interval_s` seconds; falls back
      to `MILVUS_AUDIT_SIGNING_KEY_FILE` / `MILVUS_AUDIT_SIGNING_KEY` (hex).
    - `fail_closed`: refuse Milvus calls with `AuditUnavailable` when their record
      cannot be durably written (the spool of `configure(spool_dir=...)` is full under
      `spool_on_full="fail"`, unwritable, or absent). Default: fail open, counting drops.
    - `propagate`: send each call's trace context to the server (`traceparent` and
      `client-request-id` gRPC metadata), so that the server's access log names the same
      trace id as the record; False leaves the client's RPCs as they are.
    - `clock`: seconds since the epoch for record timestamps and rule windows
      (default `time.time`); inject one for deterministic tests.
    - `shared_state`: share detection windows, alert cooldowns and blocks with every other
      process of the deployment through Redis: a `redis://` or `rediss://` (TLS) URL, or True
      for the URL in `MILVUS_AUDIT_REDIS_URL`. None (the default) also takes that variable
      when it is set; False turns sharing off whatever the environment says. Needs
      `pip install 'milvus-audit[redis]'`. See docs/deployment.md.
    - `shared_state_prefix`: the Redis key prefix of this deployment (default
      `MILVUS_AUDIT_REDIS_PREFIX`, else `"milvus-audit"`): processes share state only with
      processes of the same prefix.
    - `block_key`: HMAC key (bytes or hex) signing shared blocks; falls back to
      `MILVUS_AUDIT_BLOCK_KEY`, then to the integrity key. Without one, blocks stay in
      the process that raised them.

    - `policy`: the audit policy (docs/policy.md): which calls are recorded, sampled or
      excluded, as a list of rules (dicts in the pinned form), a `Policy`, or the path of a
      YAML file (watched, reloaded on change and on SIGHUP). None: the `policy:` section of
      the rules file given as `detection`, else `MILVUS_AUDIT_POLICY_FILE`, else record all.
    - `policy_spans`: `"recorded"` (default) builds a span only for recorded calls; `"all"`
      also for calls the policy excludes or samples out (they then cost a full call's work).
    - `lifecycle`: write `milvus.audit.lifecycle` records when auditing starts (the runtime is
      built) and stops (shutdown, `uninstrument()`), for PCI DSS 10.2.1.6. None (default): on
      when an audit policy is in effect (every compliance pack is one); True or False forces it.

    Clients built with the same `AuditConfig` share its detection state, so a brute
    force spread over many short-lived clients is still seen as one.
    """

    tracer_provider: TracerProvider | None = None
    logger_provider: LoggerProvider | None = None
    meter_provider: MeterProvider | None = None
    capture_filters: CaptureFilters = "sanitized"
    credential_key: bytes | str | None = None
    detection: bool | str | os.PathLike[str] | Rules | None = None
    on_alert: AlertCallback | Sequence[AlertCallback] = field(default_factory=tuple)
    clock: Callable[[], float] | None = None
    playbooks: Sequence[Playbook] = field(default_factory=tuple)
    integrity_key: bytes | str | os.PathLike[str] | None = None
    signing_key: Ed25519PrivateKey | str | os.PathLike[str] | None = None
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 60.0
    fail_closed: bool = False
    propagate: bool = True
    shared_state: str | bool | None = None
    shared_state_prefix: str | None = None
    block_key: bytes | str | None = field(default=None, repr=False)
    policy: object = None
    policy_spans: Literal["recorded", "all"] = "recorded"
    lifecycle: bool | None = None
    # What `wiring.runtime_for()` built for this configuration (emitter, gates, sinks, handlers).
    _runtime: object = field(default=None, init=False, repr=False, compare=False)
    # The spools whose health fail-closed mode checks: set by `AuditPipeline.audit_config()`;
    # None means every spool `configure()` set up in this process.
    durable_spools: list[Durable] | None = field(default=None, init=False, repr=False, compare=False)

    def alert_callbacks(self) -> list[AlertCallback]:
        """`on_alert` as a list: one callable or a sequence of them."""
        if callable(self.on_alert):
            return [self.on_alert]
        return list(self.on_alert)

    def __post_init__(self) -> None:
        """A configuration mistake fails here, loudly, never later as a silent internal error."""
        if self.playbooks and not self.detection:
            raise ConfigError("AuditConfig(playbooks=...) needs detection: playbooks answer alerts, "
                              "set AuditConfig(detection=True) (or a rules file)")
        if self.capture_filters not in _CAPTURE_FILTERS:
            raise ConfigError(f"AuditConfig.capture_filters must be one of {_CAPTURE_FILTERS}, "
                              f"not {self.capture_filters!r}")
        if not callable(self.on_alert):
            if isinstance(self.on_alert, (str, bytes)) or not isinstance(self.on_alert, Sequence):
                raise ConfigError("AuditConfig.on_alert takes a callable or a list of callables, "
                                  f"not {type(self.on_alert).__name__}")
            for callback in self.on_alert:
                if not callable(callback):
                    raise ConfigError(f"AuditConfig.on_alert: {callback!r} is not callable")
        if isinstance(self.playbooks, (str, bytes)) or not isinstance(self.playbooks, Sequence):
            raise ConfigError(f"AuditConfig.playbooks takes a list of Playbook, not {type(self.playbooks).__name__}")
        for playbook in self.playbooks:
            if not (hasattr(playbook, "matches") and hasattr(playbook, "actions")):
                raise ConfigError(f"AuditConfig.playbooks: {playbook!r} is not a milvus_audit.respond.Playbook")
        if self.detection is not None and not isinstance(self.detection, (bool, str, os.PathLike)) \
                and not hasattr(self.detection, "settings"):
            raise ConfigError("AuditConfig.detection takes True, a milvus_audit.detect.Rules or a YAML path, "
                              f"not {type(self.detection).__name__}")
        if self.clock is not None and not callable(self.clock):
            raise ConfigError(f"AuditConfig.clock must be a callable returning seconds, not {self.clock!r}")
        for name in ("checkpoint_every", "checkpoint_interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"AuditConfig.{name} must be a positive number, not {value!r}")
        if self.lifecycle is not None and not isinstance(self.lifecycle, bool):
            raise ConfigError(f"AuditConfig.lifecycle must be True, False or None, not {self.lifecycle!r}")
        for name in ("fail_closed", "propagate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"AuditConfig.{name} must be True or False, not {getattr(self, name)!r}")
        _check_shared_state(self.shared_state, self.shared_state_prefix)
        _check_policy(self.policy, self.policy_spans)
        for name in ("credential_key", "block_key"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (bytes, str)):
                raise ConfigError(f"AuditConfig.{name} takes bytes or a hex string, "
                                  f"not {type(getattr(self, name)).__name__}")
        key = self.integrity_key
        if key is not None and not isinstance(key, (bytes, str, os.PathLike)):
            raise ConfigError(f"AuditConfig.integrity_key takes bytes, a hex string or a key file's path, "
                              f"not {type(key).__name__}")
        if isinstance(key, (str, os.PathLike)) and not _is_hex(str(key)) and not os.path.isfile(key):
            raise ConfigError("AuditConfig.integrity_key: neither hex nor an existing key file "
                              "(`milvus-audit keygen --out DIR` writes DIR/integrity.key)")


def _check_policy(policy: object, spans: object) -> None:
    """The policy's type (its rules are checked, with file and line, when the runtime is built)."""
    if spans not in ("recorded", "all"):
        raise ConfigError(f"AuditConfig.policy_spans must be 'recorded' or 'all', not {spans!r}")
    if policy is None or isinstance(policy, (str, os.PathLike, list, tuple, dict)) or hasattr(policy, "for_operation"):
        if isinstance(policy, (str, os.PathLike)) and not os.path.isfile(policy):
            raise ConfigError(f"AuditConfig.policy: no policy file at {str(policy)[:200]!r}")
        return
    raise ConfigError("AuditConfig.policy takes a list of rules, a YAML file's path or a Policy, "
                      f"not {type(policy).__name__}")


SHARED_STATE_SCHEMES = ("redis://", "rediss://", "unix://")
_PREFIX_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


def _check_shared_state(url: object, prefix: object) -> None:
    """`shared_state` and its prefix, checked at construction (the URL itself is never echoed:
    it may carry a password)."""
    if url is not None and not isinstance(url, (bool, str)):
        raise ConfigError(f"AuditConfig.shared_state takes a redis:// or rediss:// URL, True or False, "
                          f"not {type(url).__name__}")
    if isinstance(url, str) and not url.startswith(SHARED_STATE_SCHEMES):
        scheme = url.partition("://")[0] if "://" in url else "no scheme"
        raise ConfigError(f"AuditConfig.shared_state must be a redis://, rediss:// or unix:// URL, "
                          f"not one with {scheme[:16]!r}")
    if prefix is not None and (not isinstance(prefix, str) or not prefix or len(prefix) > 64
                               or not set(prefix) <= _PREFIX_CHARACTERS):
        raise ConfigError("AuditConfig.shared_state_prefix must be 1 to 64 characters of letters, digits "
                          f"and _ . : -, not {prefix!r}")
