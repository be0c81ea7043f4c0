"""Running an agent's playbook inside a job: every Ansible task becomes the job's stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from controller.api.schemas import check_host, parse_agent_url
from controller.core import Controller
from controller.db.cluster import ControllerNode
from controller.errors import ApiError, BadRequest
from controller.jobs import JobContext

if TYPE_CHECKING:
    from controller.deploy import DeployResult, DeployTarget

TASKS_PER_DEPLOY = 40
"""about how many tasks one role runs: the percent grows with each of them up to there"""

# the agents' default ports (controller.deploy.AGENT_ROLES; not imported here: Ansible is heavy)
DEFAULT_PORTS = {"kvmagent": 7070, "storageagent": 7071, "sftpbackup": 7171, "cephagent": 7762}


def default_agent_url(address: str, role: str) -> str:
    """The URL an agent of ``role`` deployed to ``address`` serves (an IPv6 address in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{DEFAULT_PORTS[role]}"


class DeployFailed(ApiError):
    """The playbook failed; ``details.task`` names the task that failed."""

    code = "DEPLOY_FAILED"
    default_message = "the deploy failed"


def deploy_role(ctx: JobContext, target: DeployTarget, role: str, config: dict[str, Any],
                percent: tuple[float, float], secret_vars: dict[str, Any] | None = None,
                *, force: bool = False, only_if_version_differs: bool = False) -> DeployResult:
    """Deploy ``role`` to ``target``; the job's stage is ``deploy <role>: <task>`` as it goes,
    its percent moves from ``percent[0]`` to ``percent[1]``. A failed deploy raises
    :class:`DeployFailed` with the failing task's message. ``secret_vars``: role variables
    holding keys; ``force``, ``only_if_version_differs``: see
    :meth:`controller.deploy.Deployer.deploy`."""
    from controller.deploy import DeployEvent, deploy_agent  # noqa: PLC0415 - Ansible is heavy

    try:  # rows written before the API checked addresses are checked again here
        check_host(target.address)
    except ValueError as e:
        raise BadRequest(f"refusing to deploy to {target.address!r}: {e}", field="address") from None
    start, end = percent

    def on_event(e: DeployEvent) -> None:
        if e.task:
            done = min(e.done, TASKS_PER_DEPLOY) / TASKS_PER_DEPLOY
            ctx.progress(f"deploy {role}: {e.task}", start + (end - start) * done)

    ctx.progress(f"deploy {role}", start, force=True)
    result = deploy_agent(target, role, config, on_event=on_event, secret_vars=secret_vars, force=force,
                          only_if_version_differs=only_if_version_differs)
    if not result.success:
        raise DeployFailed(f"deploying {role} failed: {result.message}", task=result.failed_task,
                           role=role, address=target.address)
    return result


def controller_urls(ctl: Controller) -> list[str]:
    """Where a deployed agent may send callbacks: this node, the nodes up in the cluster (any
    of them may own the agent's resources later) and the operator's extra URLs."""
    with ctl.db.read() as s:
        nodes = list(s.scalars(select(ControllerNode.url).where(ControllerNode.state == "up")
                               .order_by(ControllerNode.node_id)))
    urls = [ctl.settings.callback_base, *nodes, *ctl.settings.agent_controller_urls]
    return list(dict.fromkeys(u.rstrip("/") for u in urls))


def agent_config(ctl: Controller, agent_url: str, **fields: Any) -> dict[str, Any]:
    """The config a deployed agent gets: the controller's callback URL, where it listens
    (``agent_url``'s host:port) and its own token if an earlier deploy gave it one (else
    the deploy generates one). An ``agent_url`` that is not ``http(s)://HOST:PORT[/path]``
    is a :class:`BadRequest`: the API refuses such URLs, but a row stored before it did
    is checked again rather than handed to Ansible."""
    try:
        # built from the parsed host and port, never from the URL's netloc (which may hold userinfo)
        listen = parse_agent_url(agent_url).listen
    except ValueError as e:
        raise BadRequest(f"agentUrl: {e}", field="agentUrl") from None
    config: dict[str, Any] = {"controller_urls": controller_urls(ctl), "listen": listen, **fields}
    token = ctl.agent_tokens.known(agent_url)
    if token:
        config["token"] = token
    return config


def register_token(ctl: Controller, result: DeployResult) -> None:
    """From now on the controller presents, and accepts, the deployed agent's own token."""
    if result.token is not None and not result.skipped:
        ctl.agent_tokens.register(result.agent_url, result.token.get_secret_value(), result.role)
