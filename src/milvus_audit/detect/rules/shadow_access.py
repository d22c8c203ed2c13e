"""shadow_access: a server access (the Milvus access log) with no audited client record.

Server records (`milvus.server.access`, `milvus_audit.source="server"`, from
`milvus-audit ingest`) are joined to client records (`milvus.audit`) by trace id: the
audited client propagates its trace context and the server logs it. Calls the server
refused log no trace id; those are joined by user, RPC and time to a refused client call.
A server record that no client record claims within `grace_s` of it is shadow access:
someone reached Milvus around the audited applications (stolen credentials with a bare
SDK, `curl`, Attu, an uninstrumented service).

The engine holds each server record until it is joined or its grace ends (see
`DetectionEngine.observe`): a joined record is dropped, since the client record was
already counted by the other rules; an unjoined one raises this alert and then goes to the
other rules (brute force keyed by the claimed user, password spray by `client.address`,
destructive operations, ...), once.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any, ClassVar

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import SERVER, event_rule
from milvus_audit.model.catalog import RPCS, Category, Operation, rpc_lookup
from milvus_audit.semconv import (
    CLIENT_ADDRESS,
    CLIENT_PORT,
    DB_COLLECTION_NAME,
    DB_OPERATION_NAME,
    FAILURE_REASON,
    OUTCOME,
    RPC_METHOD,
    SOURCE,
    SOURCE_SERVER,
    USER_NAME,
    FailureReason,
)

_REFUSED = frozenset({FailureReason.AUTHENTICATION, FailureReason.PERMISSION_DENIED})
_MAX_SEEN_TRACES = 100_000
_MAX_REFUSED_PER_USER = 64


class _Pending:
    __slots__ = ("deadline", "joined", "observation", "serves", "trace", "user")

    def __init__(self, observation: Observation, deadline: float, trace: str, user: str,
                 serves: tuple[str, ...]) -> None:
        self.observation = observation
        self.deadline = deadline
        self.trace = trace
        self.user = user
        self.serves = serves
        self.joined = False


def sensitive_rpcs() -> list[str]:
    """The RPCs a shadow access is high for: mutating, RBAC or destructive (from the catalog)."""
    return sorted(name for name, rpc in RPCS.items() if rpc.mutating or rpc.category is Category.RBAC)


def is_server_record(attributes: Mapping[str, Any]) -> bool:
    return attributes.get(SOURCE) == SOURCE_SERVER


class ShadowAccess(Rule):
    id = "shadow_access"
    severity = "high"
    attack = ("T1078",)
    description = ("A server access with no audited client record within the grace window: high for "
                   "mutating, RBAC or destructive operations, medium for reads.")
    params = {"grace_s": Param(5, positive=True)}
    joins_server_records: ClassVar[bool] = True
    principal_keys = (USER_NAME, CLIENT_ADDRESS, CLIENT_PORT)

    __slots__ = ("_pending", "_pending_by_trace", "_pending_refused", "_refused", "_seen")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._seen: OrderedDict[str, None] = OrderedDict()  # trace ids of client records
        self._refused = self.bounded(lambda: deque(maxlen=_MAX_REFUSED_PER_USER))  # user -> refused client calls
        self._pending: deque[_Pending] = deque()  # server records waiting for a client record, oldest first
        self._pending_by_trace: dict[str, list[_Pending]] = {}
        self._pending_refused: dict[str, list[_Pending]] = {}

    @property
    def grace_s(self) -> float:
        return float(self.rules.rule(self.id).params["grace_s"])

    # -- the join ----------------------------------------------------------------------------
    def client(self, observation: Observation) -> None:
        """A client record: server records of its trace (or its refusal) are accounted for."""
        trace = observation.event_id[:32]
        if trace:
            self._seen[trace] = None
            self._seen.move_to_end(trace)
            if len(self._seen) > _MAX_SEEN_TRACES:
                self._seen.popitem(last=False)
            for pending in self._pending_by_trace.pop(trace, ()):
                pending.joined = True
        attributes = observation.attributes
        if attributes.get(FAILURE_REASON) in _REFUSED:
            user = str(attributes.get(USER_NAME) or "")
            operation = str(attributes.get(DB_OPERATION_NAME) or "")
            waiting = self._pending_refused.get(user)
            if waiting:
                for pending in waiting:
                    if not pending.joined and operation in pending.serves and \
                            abs(pending.observation.timestamp_s - observation.timestamp_s) <= self.grace_s:
                        pending.joined = True
                        waiting.remove(pending)
                        return
            self._refused.get(user).append([observation.timestamp_s, operation, False])

    def server(self, observation: Observation) -> None:
        """A server record: dropped when a client record claims it, else held for the grace window."""
        attributes = observation.attributes
        trace = observation.event_id[:32]
        if trace and trace in self._seen:
            self._seen.move_to_end(trace)
            return
        user = str(attributes.get(USER_NAME) or "")
        serves = rpc_lookup(str(attributes.get(RPC_METHOD) or "")).serves
        grace = self.grace_s
        if not trace and attributes.get(FAILURE_REASON) in _REFUSED:
            refused = self._refused.peek(user)
            for entry in refused or ():
                if not entry[2] and entry[1] in serves and abs(entry[0] - observation.timestamp_s) <= grace:
                    entry[2] = True
                    return
        pending = _Pending(observation, observation.timestamp_s + grace, trace, user, serves)
        self._pending.append(pending)
        if trace:
            self._pending_by_trace.setdefault(trace, []).append(pending)
        else:
            self._pending_refused.setdefault(user, []).append(pending)

    def expired(self, now_s: float | None) -> list[Observation]:
        """Server records whose grace ended by `now_s` (None: all of them) with no client record."""
        out: list[Observation] = []
        queue = self._pending
        while queue and (now_s is None or queue[0].deadline <= now_s):
            pending = queue.popleft()
            if pending.trace:
                siblings = self._pending_by_trace.get(pending.trace)
                if siblings is not None:
                    siblings.remove(pending)
                    if not siblings:
                        del self._pending_by_trace[pending.trace]
            else:
                waiting = self._pending_refused.get(pending.user)
                if waiting is not None and pending in waiting:
                    waiting.remove(pending)
                    if not waiting:
                        del self._pending_refused[pending.user]
            if not pending.joined:
                out.append(pending.observation)
        return out

    # -- the alert ---------------------------------------------------------------------------
    def shadow(self, observation: Observation, alerts: list[Alert]) -> None:
        attributes = observation.attributes
        user = str(attributes.get(USER_NAME) or "anonymous")
        address = str(attributes.get(CLIENT_ADDRESS) or "unknown")
        port = attributes.get(CLIENT_PORT)
        source = f"{address}:{port}" if port is not None else address
        principal = f"{user}@{source}"
        settings = self.settings_for(principal)
        if settings is None or user in settings.allowlist or address in settings.allowlist:
            return
        rpc = rpc_lookup(str(attributes.get(RPC_METHOD) or ""))
        sensitive = rpc.mutating or rpc.category is Category.RBAC or rpc.destructive
        kind = "destructive " if rpc.destructive else "RBAC " if rpc.category is Category.RBAC else ""
        operation = f"{rpc.name} ({rpc.operation})" if rpc.operation else rpc.name
        collection = attributes.get(DB_COLLECTION_NAME)
        target = f" on {collection}" if collection else ""
        outcome = attributes.get(OUTCOME) or "unknown outcome"
        self.fire(alerts, settings, observation, principal,
                  lambda: f"shadow access: {user} from {source} ran {kind}{operation}{target} ({outcome}) "
                          f"with no audited client record within {settings.params['grace_s']:g} s",
                  1, 1, settings.params["grace_s"], [observation.event_id] if observation.event_id else [],
                  severity=None if sensitive else "medium",
                  collection=str(collection) if collection else None,
                  cooldown_key=f"{principal}\x00{rpc.name if sensitive else 'read'}")

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        """Not routed by failure or success: the engine calls `client`, `server` and `shadow`."""

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        # Sigma cannot say "no client record with this trace id within grace_s": the rule selects
        # the state-changing and RBAC server accesses, which a SIEM joins to client records on
        # trace_id (docs/siem.md, docs/server-logs.md). The engine and `reconcile` do the join.
        return [event_rule(cls.info, "milvus_shadow_access", "Milvus server access to join against audited clients",
                           "A state-changing or RBAC call in the Milvus server's access log. Shadow access "
                           "when no audited client record has its trace id (the in-process engine and "
                           "`milvus-audit reconcile` do that join).",
                           {"selection": {**SERVER, RPC_METHOD: sensitive_rpcs()}, "condition": "selection"},
                           ["Every audited application's own calls: join on trace_id to keep only shadow access"],
                           level="medium")]
