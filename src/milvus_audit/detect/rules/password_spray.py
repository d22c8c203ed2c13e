"""password_spray: authentication failures across many user names from one client."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule, client_of
from milvus_audit.detect.rules.brute_force import AUTHENTICATION_FAILURE, SERVER_AUTHENTICATION_FAILURE
from milvus_audit.detect.rules.sigmaform import correlation
from milvus_audit.model.catalog import Operation
from milvus_audit.semconv import CLIENT_ADDRESS, HOST_NAME, USER_NAME, FailureReason


class PasswordSpray(Rule):
    id = "password_spray"
    severity = "high"
    attack = ("T1110.003",)
    description = "Authentication failures across many user names from one client."
    params = {"distinct_users": Param(4, positive=True), "window_s": Param(300, positive=True)}
    failures = frozenset({FailureReason.AUTHENTICATION})

    __slots__ = ("_clients",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._clients = self.bounded(dict)  # client -> {user: last failure}, oldest first

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        client = client_of(observation.attributes)
        settings = self.settings_for(client)
        user = observation.attributes.get(USER_NAME)
        if settings is None or not user:
            return
        now = observation.timestamp_s
        window = settings.params["window_s"]
        seen: dict[str, float] = self._clients.get(client)
        seen.pop(str(user), None)
        seen[str(user)] = now
        threshold = settings.params["distinct_users"]
        for name, at in list(itertools.islice(seen.items(), 8)):  # expire from the oldest end
            if now - at <= window and len(seen) <= 4 * threshold + 64:
                break
            del seen[name]
        fleet = self.alerting.fleet
        others: dict[str, float] = {}
        if fleet is not None:  # shared state: user names other processes saw from this client
            others = fleet.remember(self.id, client, str(user), now, window,
                                    recheck=lambda alerts: self.recheck(client, observation, alerts))
        self._judge(settings, observation, client, seen, others, alerts)

    def recheck(self, client: str, observation: Observation, alerts: list[Alert]) -> None:
        """After a sync (shared state): the user names seen here and elsewhere, judged again."""
        settings = self.settings_for(client)
        seen = self._clients.peek(client)
        fleet = self.alerting.fleet
        if settings is not None and seen is not None and fleet is not None:
            self._judge(settings, observation, client, seen, fleet.maps.get((self.id, client), {}), alerts)

    def _judge(self, settings: Any, observation: Observation, client: str, seen: dict[str, float],
               others: dict[str, float], alerts: list[Alert]) -> None:
        now = observation.timestamp_s
        window = settings.params["window_s"]
        threshold = settings.params["distinct_users"]
        distinct = len(seen)
        if others:
            distinct = len(set(seen).union(name for name, at in others.items() if now - at <= window))
        self.track(client, distinct / threshold)
        if distinct >= threshold:
            self.fire(alerts, settings, observation, client,
                      f"authentication failures for {distinct} distinct users from {client} "
                      f"within {int(window)} s", distinct, threshold, window, [observation.event_id])

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        # The engine keys on `client.address`, else `host.name`. Audit records carry neither, the
        # resource does (`host.name`), so a SIEM groups them by host and the engine sees one client;
        # server records carry the address the server saw.
        return [correlation(cls.info, "milvus_password_spray", "Milvus password spray from one client",
                            "value_count", AUTHENTICATION_FAILURE, [HOST_NAME], params["window_s"],
                            params["distinct_users"], field=USER_NAME),
                correlation(cls.info, "milvus_server_password_spray", "Milvus password spray from one "
                            "address, seen by the server", "value_count", SERVER_AUTHENTICATION_FAILURE,
                            [CLIENT_ADDRESS], params["window_s"], params["distinct_users"], field=USER_NAME)]
