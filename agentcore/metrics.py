"""Prometheus metrics of one agent process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentcore import __version__


class AgentMetrics:
    """Tasks by state, command latency and callback delivery."""

    def __init__(self, agent: str) -> None:
        self.registry = CollectorRegistry()
        self.tasks_finished = Counter(
            "kvmcloud_agent_tasks_total", "Tasks finished, by command and final state",
            ["command", "state"], registry=self.registry,
        )
        self.tasks_active = Gauge(
            "kvmcloud_agent_tasks_active", "Tasks queued or running now", ["state"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "kvmcloud_agent_command_seconds", "Time from acceptance to reply, by command",
            ["command"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
        )
        self.callback_retries = Counter(
            "kvmcloud_agent_callback_retries_total", "Callback POSTs that failed and were rescheduled",
            registry=self.registry,
        )
        self.callbacks = Counter(
            "kvmcloud_agent_callbacks_total", "Callbacks by outcome (delivered, dropped)",
            ["result"], registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "kvmcloud_agent_outbox_pending", "Callbacks waiting for delivery", registry=self.registry
        )
        self.info = Gauge(
            "kvmcloud_agent_info", "Agent identity", ["agent", "version"], registry=self.registry
        )
        self.info.labels(agent=agent, version=__version__).set(1)

    def track_outbox(self, pending: Callable[[], int]) -> None:
        self.outbox_pending.set_function(lambda: float(pending()))
