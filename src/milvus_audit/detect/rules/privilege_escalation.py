"""privilege_escalation: admin role or global privileges granted, another user's password changed,
a user created and granted a role within a window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from milvus_audit.detect.rules.base import Alert, Observation, Param, Rule
from milvus_audit.detect.rules.sigmaform import AUDIT, event_rule, ops
from milvus_audit.model.catalog import Action, Operation
from milvus_audit.semconv import (
    DB_OPERATION_NAME,
    OBJECT_NAME,
    OBJECT_TYPE,
    OUTCOME,
    PRIVILEGE,
    SUCCESS,
    TARGET_ROLE,
    TARGET_USER,
    USER_NAME,
)

_ACTIONS = frozenset({Action.ACCOUNT_CREATE, Action.ROLE_GRANT, Action.PRIVILEGE_GRANT, Action.PASSWORD_CHANGE})
ADMIN_ROLE = "admin"
GLOBAL_PRIVILEGES = ("*", "All", "PrivilegeAll")
EVERY_OBJECT = "*"
CREATED = "created"  # shared state: the fleet's map of created users


class PrivilegeEscalation(Rule):
    id = "privilege_escalation"
    severity = "critical"
    attack = ("T1098", "T1098.003")
    description = ("A grant of the admin role or of global privileges, a password change of another user, or a "
                   "user created and granted a role within a window.")
    params = {"window_s": Param(600)}

    __slots__ = ("_created",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._created = self.bounded(float)  # user -> when it was created

    @classmethod
    def observes_success(cls, operation: Operation) -> bool:
        return operation.action in _ACTIONS

    def observe(self, observation: Observation, principal: str, operation: Operation,
                alerts: list[Alert]) -> None:
        attributes = observation.attributes
        settings = self.settings_for(principal)
        if settings is None:
            return
        action = operation.action
        now = observation.timestamp_s
        target_user = attributes.get(TARGET_USER)
        role = attributes.get(TARGET_ROLE)
        summary = None
        fleet = self.alerting.fleet
        if action is Action.ACCOUNT_CREATE and target_user:
            self._created.set(str(target_user), now)
            if fleet is not None:  # shared state: a user created here and granted a role elsewhere
                fleet.remember(self.id, CREATED, str(target_user), now, settings.params["window_s"])
        elif action is Action.ROLE_GRANT:
            created = self._created.peek(str(target_user)) if target_user else None
            if created is None and target_user and fleet is not None and role != ADMIN_ROLE:
                created = fleet.lookup(self.id, CREATED, str(target_user), settings.params["window_s"],
                                       recheck=lambda alerts: self.recheck(observation, principal, alerts))
            if role == ADMIN_ROLE:
                summary = f"{principal} granted the admin role to {target_user}"
            elif created is not None and now - created <= settings.params["window_s"]:
                summary = f"{principal} created {target_user} and granted it role {role} within " \
                          f"{int(now - created)} s"
        elif action is Action.PRIVILEGE_GRANT:
            privilege = attributes.get(PRIVILEGE)
            privileges = privilege if isinstance(privilege, (list, tuple)) else [privilege]
            if attributes.get(OBJECT_NAME) == EVERY_OBJECT or any(p in GLOBAL_PRIVILEGES for p in privileges):
                summary = f"{principal} granted global privilege {privilege} on " \
                          f"{attributes.get(OBJECT_TYPE)} * to role {role}"
        elif action is Action.PASSWORD_CHANGE and target_user and target_user != attributes.get(USER_NAME):
            summary = f"{principal} changed the password of another user, {target_user}"
        if summary:
            target = target_user or role or ""
            self.fire(alerts, settings, observation, principal, summary, 1, 1,
                      settings.params["window_s"], [observation.event_id],
                      cooldown_key=f"{principal}\x00{action.value}\x00{target}")

    def recheck(self, observation: Observation, principal: str, alerts: list[Alert]) -> None:
        """After a sync (shared state): was the user granted a role here created elsewhere?"""
        settings = self.settings_for(principal)
        fleet = self.alerting.fleet
        target_user = observation.attributes.get(TARGET_USER)
        if settings is None or fleet is None or not target_user:
            return
        created = fleet.maps.get((self.id, CREATED), {}).get(str(target_user))
        now = observation.timestamp_s
        if created is not None and 0 <= now - created <= settings.params["window_s"]:
            role = observation.attributes.get(TARGET_ROLE)
            self.fire(alerts, settings, observation, principal,
                      f"{principal} created {target_user} and granted it role {role} within "
                      f"{int(now - created)} s", 1, 1, settings.params["window_s"], [observation.event_id],
                      cooldown_key=f"{principal}\x00{Action.ROLE_GRANT.value}\x00{target_user}")

    @classmethod
    def sigma(cls, params: Mapping[str, float]) -> list[dict[str, Any]]:
        # Not here: "another user's password" compares two fields, "created and granted within
        # window_s" joins two events on the target user; both are engine-only (docs/siem.md).
        done = {**AUDIT, OUTCOME: SUCCESS}
        return [
            event_rule(cls.info, "milvus_admin_role_granted", "Milvus admin role granted",
                       "A user was given the built-in admin role.",
                       {"selection": {**done, DB_OPERATION_NAME: ops(Action.ROLE_GRANT), TARGET_ROLE: ADMIN_ROLE},
                        "condition": "selection"},
                       ["Onboarding of a new administrator"]),
            event_rule(cls.info, "milvus_global_privilege_granted", "Milvus global privilege granted",
                       "A role was granted all privileges, or a privilege on every object.",
                       {"selection": {**done, DB_OPERATION_NAME: ops(Action.PRIVILEGE_GRANT)},
                        # a literal *, not a Sigma wildcard
                        "wildcard": [{OBJECT_NAME: "\\" + EVERY_OBJECT},
                                     {PRIVILEGE: [p.replace("*", "\\*") for p in GLOBAL_PRIVILEGES]}],
                        "condition": "selection and wildcard"},
                       ["Initial cluster set-up"]),
        ]
