"""The audit policy at run time: where it comes from, changing it, reloading it.

Each `AuditConfig`'s runtime holds one `PolicyHolder`; the call path reads
`holder.policy` once per call (a swap is atomic, so a change never fails a call in
flight). Sources, first found wins: `AuditConfig(policy=...)` (rules, a `Policy`, or a
YAML file's path), the `policy:` section of the rules file given as `detection`, then
the file named by `MILVUS_AUDIT_POLICY_FILE`.

A policy read from a file is reloaded when the file changes (checked every second) and
on SIGHUP (when the process has no SIGHUP handler of its own). `set_policy()` changes
it from Python. Each change, and each refused reload, is recorded as `milvus.audit.policy`
with the policy's hash, the previous one, and who or what changed it.
"""

from __future__ import annotations

import getpass
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from milvus_audit import semconv
from milvus_audit.model.policy import Policy, PolicyError, parse_policy, parse_policy_yaml, policy_section
from milvus_audit.runtime.diagnostics import INTERNAL_ERRORS
from milvus_audit.runtime.worker import background_thread

EMPTY = Policy((), "<none>")
Emit = Callable[[str, str, dict[str, Any]], None]
PolicyLike = Policy | Iterable[Mapping[str, Any]] | Mapping[str, Any] | str | os.PathLike[str] | None

_HOLDERS: weakref.WeakSet[PolicyHolder] = weakref.WeakSet()
_LOCK = threading.Lock()
_WAKE = threading.Event()
_watcher: threading.Thread | None = None
_sighup_installed = False
_process_default: Policy | None = None  # set_policy() without a configuration: for runtimes built later too
WATCH_INTERVAL_S = 1.0


def load_policy(value: PolicyLike, source: str = "AuditConfig.policy") -> tuple[Policy, Path | None]:
    """A `Policy` (and the file it came from, if any) from any accepted form."""
    if value is None:
        return EMPTY, None
    if isinstance(value, Policy):
        return value, None
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(str(path), None, f"cannot read the policy file: {exc.strerror or exc}") from None
        return parse_policy_yaml(text, str(path)), path
    return parse_policy(value, source), None


def policy_of_rules_file(path: str | os.PathLike[str]) -> Policy | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None  # the rules loader reports it
    return policy_section(text, str(path))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyHolder:
    """One configuration's current policy; `policy` is read by the call path on every call."""

    def __init__(self, policy: Policy, path: Path | None = None, *, rules_file: bool = False,
                 spans_all: bool = False) -> None:
        self.policy = policy
        self.path = path
        self.rules_file = rules_file  # the path is a rules file: its `policy:` section
        self.spans_all = spans_all
        self.emit: Emit | None = None
        self._stamp = _stamp(path) if path is not None else None
        self._lock = threading.Lock()
        with _LOCK:
            _HOLDERS.add(self)
        if path is not None:
            _watch()

    @property
    def hash(self) -> str:
        return self.policy.hash

    def set(self, policy: Policy, trigger: str, changed_by: str | None = None) -> None:
        """Swap in `policy` and record the change."""
        with self._lock:
            previous = self.policy
            self.policy = policy
        self._record(trigger, changed_by, previous, policy, None)

    def _record(self, trigger: str, changed_by: str | None, previous: Policy, policy: Policy,
                error: str | None) -> None:
        if self.emit is None:
            return
        attributes: dict[str, Any] = {
            semconv.POLICY_HASH: policy.hash, semconv.POLICY_PREVIOUS_HASH: previous.hash,
            semconv.POLICY_SOURCE: policy.source, semconv.POLICY_RULES: len(policy.rules),
            semconv.POLICY_TRIGGER: trigger, semconv.POLICY_CHANGED_BY: changed_by or _who(trigger),
            semconv.POLICY_OUTCOME: "rejected" if error else "applied",
        }
        if error:
            attributes[semconv.POLICY_ERROR] = error[:2048]
        try:
            self.emit(semconv.POLICY_EVENT, semconv.WARN if error else semconv.INFO, attributes)
        except Exception as exc:
            INTERNAL_ERRORS.report("policy record", exc)

    def reload(self, trigger: str) -> bool:
        """Read the policy file again; a file that no longer loads keeps the current policy
        (the refusal is recorded). True when a new policy was applied."""
        path = self.path
        if path is None:
            return False
        self._stamp = _stamp(path)
        try:
            if self.rules_file:
                policy = policy_of_rules_file(path) or Policy((), str(path))
            else:
                policy, _ = load_policy(path)
        except PolicyError as exc:
            self._record(trigger, None, self.policy, self.policy, str(exc))
            return False
        if policy.hash == self.policy.hash:
            return False
        self.set(policy, trigger)
        return True

    def changed(self) -> bool:
        return self.path is not None and _stamp(self.path) != self._stamp


def _who(trigger: str) -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{trigger} by {user} (pid {os.getpid()})"


def _sighup(signum: int, frame: object) -> None:
    _pending_sighup.set()
    _WAKE.set()


_pending_sighup = threading.Event()


def _watch() -> None:
    """Start the file watcher (once per process) and take SIGHUP if nobody else does."""
    global _watcher, _sighup_installed
    with _LOCK:
        if _watcher is None or not _watcher.is_alive():
            _watcher = background_thread(_run_watcher, "milvus-audit-policy")
            _watcher.start()
        if not _sighup_installed and hasattr(signal, "SIGHUP") \
                and threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
                    signal.signal(signal.SIGHUP, _sighup)
                    _sighup_installed = True
            except (ValueError, OSError):  # pragma: no cover - not the main thread of the main interpreter
                pass


def _run_watcher() -> None:
    while True:
        _WAKE.wait(WATCH_INTERVAL_S)
        _WAKE.clear()
        sighup = _pending_sighup.is_set()
        _pending_sighup.clear()
        with _LOCK:
            holders = list(_HOLDERS)
        for holder in holders:
            try:
                if holder.path is None:
                    continue
                if sighup:
                    holder.reload("sighup")
                elif holder.changed():
                    holder.reload("file_change")
            except Exception as exc:
                INTERNAL_ERRORS.report("policy reload", exc)


def check_now() -> None:
    """Wake the watcher (tests, and after writing a policy file)."""
    _WAKE.set()


def holder_for(policy_setting: object, rules_file: str | os.PathLike[str] | None, *,
               spans_all: bool = False) -> PolicyHolder:
    """The holder of a configuration: its own policy, its rules file's section, set_policy()'s, or the
    environment's file."""
    if policy_setting is not None:
        policy, path = load_policy(policy_setting)  # type: ignore[arg-type]  # AuditConfig checked its type
        return PolicyHolder(policy, path, spans_all=spans_all)
    if rules_file is not None:
        section = policy_of_rules_file(rules_file)
        if section is not None:
            return PolicyHolder(section, Path(rules_file), rules_file=True, spans_all=spans_all)
    if _process_default is not None:
        return PolicyHolder(_process_default, spans_all=spans_all)
    env = os.environ.get(semconv.POLICY_FILE_ENV)
    if env:
        policy, path = load_policy(env, semconv.POLICY_FILE_ENV)
        return PolicyHolder(policy, path, spans_all=spans_all)
    return PolicyHolder(EMPTY, spans_all=spans_all)


def set_policy(policy: PolicyLike, config: Any = None, *, changed_by: str | None = None) -> Policy:
    """Change the audit policy at run time: of `config`'s runtime, or (without one) of every
    configuration in this process and of those built later. Recorded as `milvus.audit.policy`.
    A path is watched afterwards like a configured policy file. Returns the loaded policy."""
    global _process_default
    loaded, path = load_policy(policy, "set_policy")
    if config is not None:
        runtime = getattr(config, "_runtime", None)
        holder = getattr(runtime, "policy", None)
        if not isinstance(holder, PolicyHolder):
            config.policy = loaded  # applied when its runtime is built
            return loaded
        holders = [holder]
    else:
        _process_default = loaded
        with _LOCK:
            holders = list(_HOLDERS)
    for each in holders:
        each.path, each.rules_file = path, False
        each._stamp = _stamp(path) if path is not None else None
        each.set(loaded, "set_policy", changed_by)
    if path is not None:
        _watch()
    return loaded
