"""Run one of ``ansible/*.yml`` through ansible-runner and stream its events.

The inventory, extra variables and SSH options are generated per run in a
private data directory; the SSH host key is always checked against the
controller's known_hosts file.

Both files are written as YAML documents tagged ``!unsafe``: many of their
values come from API users (agent URLs, host names, paths), and ansible-core
2.19 otherwise trusts ``-e @file`` and inventory files as templates, so a
``{{ lookup('pipe', ...) }}`` in a value would run on the controller. Under the
tag every string is data: roles still combine and print such values, but never
evaluate them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from controller.deploy.known_hosts import KnownHosts
from controller.deploy.models import DeployEvent, DeployTarget

log = logging.getLogger(__name__)

EventCallback = Callable[[DeployEvent], None]


@dataclass
class PlaybookOutcome:
    """What a playbook run did to its one host."""

    status: str
    rc: int
    changed: int = 0
    failed_task: str = ""
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0


def ssh_args(known_hosts: KnownHosts) -> str:
    """SSH options of every deploy: host keys checked, never added silently."""
    return " ".join([
        f"-o UserKnownHostsFile={known_hosts.path}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        "-o IdentitiesOnly=yes",
        "-o BatchMode=yes",
        "-o ConnectTimeout=10",
    ])


def inventory(group: str, target: DeployTarget, known_hosts: KnownHosts) -> dict[str, Any]:
    host: dict[str, Any] = {
        "ansible_host": target.address,
        "ansible_port": target.ssh_port,
        "ansible_user": target.user,
        "ansible_python_interpreter": target.python,
        "ansible_ssh_common_args": ssh_args(known_hosts),
        **target.host_vars,
    }
    if target.key_file is not None:
        host["ansible_ssh_private_key_file"] = str(target.key_file)
    return {"all": {"children": {group: {"hosts": {target.address: host}}}}}


def as_data(value: Any) -> str:
    """``value`` as a YAML document whose root is tagged ``!unsafe``: Ansible reads every
    string in it, keys included, as data and never templates it. ``value`` is what JSON can
    hold (tuples become lists), as when ansible-runner wrote the files."""
    return "--- !unsafe\n" + yaml.safe_dump(json.loads(json.dumps(value)), default_flow_style=False)


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by this user only (it may hold tokens and keys)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _message(res: dict[str, Any]) -> str:
    parts = [str(res.get("msg") or "").strip()]
    for key in ("stderr", "module_stderr"):
        text = str(res.get(key) or "").strip()
        if text and text not in parts[0]:
            parts.append(text[-1500:])
    return ": ".join(p for p in parts if p) or "failed"


class _Events:
    """Turns ansible-runner events into :class:`DeployEvent` and the outcome."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.on_event = on_event
        self.done = 0
        self.failed_task = ""
        self.message = ""

    def emit(self, event: DeployEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("deploy event callback failed")

    def __call__(self, raw: dict[str, Any]) -> bool:
        kind = raw.get("event", "")
        data = raw.get("event_data") or {}
        task = str(data.get("task") or "")
        host = str(data.get("host") or "")
        res = data.get("res") or {}
        if kind == "playbook_on_task_start":
            self.emit(DeployEvent("task", task=task, done=self.done))
        elif kind == "runner_on_ok":
            self.done += 1
            self.emit(DeployEvent("changed" if res.get("changed") else "ok", task, host, done=self.done))
        elif kind == "runner_on_skipped":
            self.done += 1
            self.emit(DeployEvent("skipped", task, host, done=self.done))
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                return True
            self.done += 1
            self.failed_task = self.failed_task or task
            msg = _message(res)
            if kind == "runner_on_unreachable":
                msg = f"host unreachable over SSH: {msg}"
            self.message = self.message or msg
            self.emit(DeployEvent("failed" if kind == "runner_on_failed" else "unreachable",
                                  task, host, msg, done=self.done))
        return True


def run_playbook(
    ansible_dir: Path,
    playbook: str,
    group: str,
    target: DeployTarget,
    known_hosts: KnownHosts,
    extravars: dict[str, Any],
    run_dir: Path,
    *,
    on_event: EventCallback | None = None,
    check: bool = False,
    timeout: float = 900,
) -> PlaybookOutcome:
    """Run ``ansible_dir/playbook`` against ``target``, which is put in ``group``."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    events = _Events(on_event)
    events.emit(DeployEvent("start", task=playbook, host=target.address))
    # a short private directory: SSH control sockets are unix sockets with a path limit
    control_dir = tempfile.mkdtemp(prefix="kc-ssh-")
    started = time.monotonic()
    try:
        runner = _run(ansible_dir, playbook, group, target, known_hosts, extravars, run_dir,
                      control_dir, events, check, timeout)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
    stats = runner.stats or {}
    outcome = PlaybookOutcome(
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else -1),
        changed=int(sum((stats.get("changed") or {}).values())),
        failed_task=events.failed_task,
        message=events.message,
        stats={k: v for k, v in stats.items() if isinstance(v, dict)},
        duration=time.monotonic() - started,
    )
    if outcome.status == "timeout":
        outcome.message = f"the playbook did not finish within {timeout:.0f}s"
    elif outcome.status != "successful" and not outcome.message:
        outcome.message = f"ansible-playbook ended with status {outcome.status} (rc={outcome.rc}): {_tail(runner)}"
    # the extra variables hold the agent's token: keep them no longer than the run
    (run_dir / "env" / "extravars").unlink(missing_ok=True)
    events.emit(DeployEvent("finished", host=target.address, message=outcome.status, done=events.done))
    return outcome


def _tail(runner: Any, lines: int = 5) -> str:
    try:
        text = runner.stdout.read()
    except (AttributeError, OSError, ValueError):
        return ""
    return " | ".join(line.strip() for line in str(text).strip().splitlines()[-lines:])


def _run(ansible_dir: Path, playbook: str, group: str, target: DeployTarget, known_hosts: KnownHosts,
         extravars: dict[str, Any], run_dir: Path, control_dir: str, events: _Events, check: bool,
         timeout: float) -> Any:
    # ansible-runner passes an existing env/extravars as "-e @file" and leaves it as it is,
    # and takes an absolute inventory path as given: both keep their !unsafe tag
    write_private(run_dir / "env" / "extravars", as_data(extravars))
    hosts = write_private(run_dir / "inventory" / "hosts.yml", as_data(inventory(group, target, known_hosts)))
    return ansible_runner.run(
        private_data_dir=str(run_dir),
        project_dir=str(ansible_dir),
        playbook=playbook,
        inventory=str(hosts),
        envvars={
            "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg"),
            # ansible-runner turns host key checking off unless told otherwise
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir,
            # ansible-playbook comes with this Python's environment
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        },
        cmdline="--check" if check else None,
        event_handler=events,
        quiet=True,
        timeout=int(timeout),
    )
