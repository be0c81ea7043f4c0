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
        # labels() takes a lock and hashes its arguments: every finished task used to
        # pay that three times, so the labelled children are looked up once
        self._finished: dict[tuple[str, str], Counter] = {}
        self._seconds: dict[str, Histogram] = {}
        self.delivered = self.callbacks.labels(result="delivered")
        self.dropped = self.callbacks.labels(result="dropped")

    def task_finished(self, command: str, state: str, seconds: float) -> None:
        """Count a finished task and observe its time from acceptance to reply."""
        counter = self._finished.get((command, state))
        if counter is None:
            counter = self._finished.setdefault((command, state), self.tasks_finished.labels(command, state))
        histogram = self._seconds.get(command)
        if histogram is None:
            histogram = self._seconds.setdefault(command, self.command_seconds.labels(command))
        counter.inc()
        histogram.observe(seconds)

    def callback_result(self, result: str) -> None:
        (self.delivered if result == "delivered" else self.callbacks.labels(result=result)).inc()

    def track_outbox(self, pending: Callable[[], int]) -> None:
        self.outbox_pending.set_function(lambda: float(pending()))
