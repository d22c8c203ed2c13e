"""Playbooks: which alerts trigger which actions, and the actions themselves.

Every action attempted is itself audited as a `milvus.response` record. Webhooks and
revocations run on a background worker; blocks and callbacks run at once. Nothing
here can fail or slow the application's Milvus call beyond a non-blocking queue put.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from milvus_audit import semconv
from milvus_audit.auditing.gates import SCOPES, BlockList, principal_for
from milvus_audit.detect.rules import SEVERITIES, RulesError
from milvus_audit.respond.webhook import DeliveryWorker, post_json, target_of

if TYPE_CHECKING:
    from milvus_audit.detect.engine import Alert
    from milvus_audit.otel.emitter import OTelEmitter

RESPONSE_EVENT = semconv.RESPONSE_EVENT
PROTECTED_USERS = frozenset({"root"})


@dataclass
class ResponseContext:
    """What an action needs: where to record, the shared block list and worker."""

    emitter: OTelEmitter
    blocks: BlockList
    worker: DeliveryWorker

    def record_queue_full(self, action: str, alert: Alert, target: str) -> None:
        drops = self.worker.drops_to_report()
        if drops:
            self.record(action, alert, target, "failure", error="response queue full",
                        extra={"milvus_audit.response.dropped": drops})

    def record(self, action: str, alert: Alert, target: str, outcome: str, *, dry_run: bool = False,
               error: str = "", extra: dict[str, Any] | None = None) -> None:
        if self.worker.closed and outcome != "abandoned":
            return  # shutdown already recorded this response as abandoned
        attributes: dict[str, Any] = {
            "milvus_audit.response.action": action,
            "milvus_audit.response.target": target,
            "milvus_audit.response.outcome": outcome,
            "milvus_audit.response.dry_run": dry_run,
            "milvus_audit.alert.rule": alert.rule,
            "milvus_audit.alert.id": alert.id,
        }
        if error:
            attributes["milvus_audit.response.error"] = error
        attributes.update(extra or {})
        self.emitter.emit_record(RESPONSE_EVENT, "WARN" if outcome == "failure" else "INFO", attributes)


def slack_escape(text: object) -> str:
    """Text as Slack shows it, never as markup: `&`, `<` and `>` escaped as Slack documents,
    so `<!channel>`, `<@U123>` and `<https://evil|label>` in user-controlled values stay text."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Webhook:
    """POST the alert as JSON; signed when `secret` is set; `format="slack"` for Slack-compatible payloads.

    The URL is a credential: records name the target as `target` (scheme, host and an
    HMAC fingerprint keyed with `fingerprint_key`, or a per-process key), never the URL.
    """

    url: str = field(repr=False)
    secret: str | bytes | None = field(default=None, repr=False)
    format: Literal["generic", "slack"] = "generic"
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.5
    fingerprint_key: str | bytes | None = field(default=None, repr=False)
    name = "webhook"

    @property
    def target(self) -> str:
        """`scheme://host[:port]#fp=<16 hex>`: what the `milvus.response` record says."""
        return target_of(self.url, self.fingerprint_key)

    def payload(self, alert: Alert) -> dict[str, Any]:
        body = {"timestamp_ns": alert.timestamp_ns, **alert.attributes()}
        if self.format == "slack":
            text = f":rotating_light: [{alert.severity}] {alert.rule}: {alert.summary}"
            return {"text": slack_escape(text),
                    "attachments": [{"fields": [{"title": slack_escape(k), "value": slack_escape(v), "short": True}
                                                for k, v in body.items()]}]}
        return body

    def run(self, alert: Alert, context: ResponseContext) -> None:
        payload = self.payload(alert)
        target = self.target

        def deliver() -> None:
            ok, error, attempts = post_json(self.url, payload, secret=self.secret, timeout_s=self.timeout_s,
                                            retries=self.retries, backoff_s=self.backoff_s)
            context.record(self.name, alert, target, "success" if ok else "failure", error=error,
                           extra={"milvus_audit.response.attempts": attempts})

        def abandon() -> None:
            context.record(self.name, alert, target, "abandoned", error="shutdown before delivery")

        if not context.worker.submit(deliver, abandon):
            context.record_queue_full(self.name, alert, target)


@dataclass
class Callback:
    """Call any Python callable with the alert; its exceptions are contained."""

    fn: Callable[[Alert], Any]
    name = "callback"

    def run(self, alert: Alert, context: ResponseContext) -> None:
        target = getattr(self.fn, "__qualname__", repr(self.fn))
        try:
            self.fn(alert)
        except Exception as exc:
            context.record(self.name, alert, target, "failure", error=f"{type(exc).__name__}: {exc}")
            return
        context.record(self.name, alert, target, "success")


@dataclass
class Block:
    """Refuse the offending principal's calls for `ttl_s` seconds, before they reach Milvus."""

    ttl_s: float
    scope: Literal["enduser", "user", "client"] = "enduser"
    name = "block"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"Block(scope=...) must be one of {SCOPES}, not {self.scope!r}")

    def run(self, alert: Alert, context: ResponseContext) -> None:
        principal = principal_for(self.scope, alert.principal_attributes)
        if principal is None:
            context.record(self.name, alert, "", "skipped", error=f"the alert names no {self.scope} principal")
            return
        entry = context.blocks.block(self.scope, principal, self.ttl_s, alert.rule, alert.id)
        context.record(self.name, alert, f"{self.scope}:{principal}", "success",
                       extra={"milvus_audit.response.ttl_s": self.ttl_s, "milvus_audit.response.until": entry.until})


@dataclass
class Revoke:
    """Server-side containment: revoke the offending user's roles (opt-in; dry-run by default).

    Which roles were revoked is kept, so `restore(user)` grants them back in one call.
    `reset_password=True` also sets a random password that is never logged. Refuses to
    act on `root` or on `allowlist`ed users.
    """

    admin_client: Any
    dry_run: bool = True
    reset_password: bool = False
    allowlist: Sequence[str] = ()
    revoked: dict[str, list[str]] = field(default_factory=dict)
    name = "revoke"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def run(self, alert: Alert, context: ResponseContext) -> None:
        user = alert.principal_attributes.get("user.name")
        if not user:
            context.record(self.name, alert, "", "skipped", dry_run=self.dry_run, error="the alert names no user")
            return
        if user in PROTECTED_USERS or user in self.allowlist:
            context.record(self.name, alert, f"user:{user}", "refused", dry_run=self.dry_run,
                           error="protected or allowlisted user")
            return
        def abandon() -> None:
            context.record(self.name, alert, f"user:{user}", "abandoned", dry_run=self.dry_run,
                           error="shutdown before revocation")

        if not context.worker.submit(lambda: self._revoke(str(user), alert, context), abandon):
            context.record_queue_full(self.name, alert, f"user:{user}")

    def _revoke(self, user: str, alert: Alert, context: ResponseContext) -> None:
        try:
            roles = [str(role) for role in self.admin_client.describe_user(user).get("roles", ())]
            if not self.dry_run:
                for role in roles:
                    self.admin_client.revoke_role(user, role)
                with self._lock:
                    self.revoked.setdefault(user, []).extend(r for r in roles if r not in self.revoked.get(user, []))
                if self.reset_password:
                    self.admin_client.update_password(user, "", secrets.token_urlsafe(24))
        except Exception as exc:
            context.record(self.name, alert, f"user:{user}", "failure", dry_run=self.dry_run,
                           error=type(exc).__name__)
            return
        context.record(self.name, alert, f"user:{user}", "success", dry_run=self.dry_run,
                       extra={"milvus_audit.response.roles": roles or [""],
                              "milvus_audit.response.password_reset": self.reset_password and not self.dry_run})

    def restore(self, user: str) -> list[str]:
        """Grant back the roles this action revoked from `user`; return them."""
        with self._lock:
            roles = self.revoked.pop(user, [])
        for role in roles:
            self.admin_client.grant_role(user, role)
        return roles


ResponseAction = Webhook | Callback | Block | Revoke


@dataclass
class Playbook:
    """Run `actions` for alerts of the given rule ids (None: any) at or above `min_severity`."""

    rules: Sequence[str] | None = None
    min_severity: str | None = None
    actions: Sequence[ResponseAction] = ()

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ValueError(f"Playbook(min_severity=...) must be one of {SEVERITIES}, not {self.min_severity!r}")

    def matches(self, alert: Alert) -> bool:
        if self.rules is not None and alert.rule not in self.rules:
            return False
        if self.min_severity is not None:
            return SEVERITIES.index(alert.severity) >= SEVERITIES.index(self.min_severity)
        return True


class Responder:
    """Shared by every client of one `AuditConfig`: runs matching playbooks for each alert."""

    def __init__(self, playbooks: Sequence[Playbook], blocks: BlockList, emitter: OTelEmitter) -> None:
        self.playbooks = list(playbooks)
        self.blocks = blocks
        self.emitter = emitter
        self.worker = DeliveryWorker()
        self.can_block = any(isinstance(action, Block) for playbook in self.playbooks for action in playbook.actions)

    def handle(self, alert: Alert) -> None:
        context = ResponseContext(self.emitter, self.blocks, self.worker)
        for playbook in self.playbooks:
            if playbook.matches(alert):
                for action in playbook.actions:
                    try:
                        action.run(alert, context)
                    except Exception as exc:
                        context.record(getattr(action, "name", type(action).__name__), alert, "", "failure",
                                       error=type(exc).__name__)


_YAML_ACTIONS = {"webhook": Webhook, "block": Block}


def playbooks_from_yaml(path: str | Path) -> list[Playbook]:
    """The `playbooks:` section of a rules file (webhook and block actions; callbacks and
    revocations need Python objects and are configured in code)."""
    text = Path(path).read_text(encoding="utf-8")
    root = yaml.compose(text)
    if root is None or not isinstance(root, yaml.MappingNode):
        return []
    playbooks = []
    for key_node, value_node in root.value:
        if key_node.value != "playbooks":
            continue
        if not isinstance(value_node, yaml.SequenceNode):
            raise RulesError(f"{path}:{value_node.start_mark.line + 1}: 'playbooks' must be a list")
        for item in value_node.value:
            line = item.start_mark.line + 1
            data = yaml.safe_load(yaml.serialize(item)) or {}
            unknown = set(data) - {"rules", "min_severity", "actions"}
            if unknown:
                raise RulesError(f"{path}:{line}: playbook has unknown keys {sorted(unknown)}")
            actions: list[ResponseAction] = []
            for action in data.get("actions", []):
                if not isinstance(action, dict) or len(action) != 1 or next(iter(action)) not in _YAML_ACTIONS:
                    shown = sorted(map(str, action)) if isinstance(action, dict) else type(action).__name__
                    raise RulesError(f"{path}:{line}: each action is one of {sorted(_YAML_ACTIONS)} "
                                     f"with its settings, got {shown}")  # not the values: a URL is a credential
                kind, settings = next(iter(action.items()))
                try:
                    actions.append(_YAML_ACTIONS[kind](**(settings or {})))
                except TypeError as exc:
                    raise RulesError(f"{path}:{line}: {kind}: {exc}") from exc
            try:
                playbooks.append(Playbook(rules=data.get("rules"), min_severity=data.get("min_severity"),
                                          actions=actions))
            except ValueError as exc:
                raise RulesError(f"{path}:{line}: {exc}") from exc
    return playbooks
