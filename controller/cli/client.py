"""The CLI's HTTP client of the controller API: auth, errors, name lookup, jobs."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_URL = "http://127.0.0.1:8080"
CONFIG_FILE = Path("~/.config/kvmcloud/cli.toml")


class ApiFailure(click.ClickException):
    """An API error answer, shown as ``CODE: message`` (exit status 1)."""

    def __init__(self, status: int, body: Any) -> None:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            text = f"{err.get('code', 'ERROR')}: {err.get('message', '')}"
        else:
            text = f"HTTP {status}: {str(body)[:500]}"
        super().__init__(text)
        self.status = status
        self.body = body


@dataclass
class Settings:
    """Where the API is and how to authenticate (flags > env > config file)."""

    url: str = DEFAULT_URL
    token: str | None = None

    @classmethod
    def resolve(cls, url: str | None, token: str | None, config: str | None) -> Settings:
        path = Path(config).expanduser() if config else CONFIG_FILE.expanduser()
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise click.UsageError(f"cannot read config {path}: {e}") from None
        elif config:
            raise click.UsageError(f"no config file {path}")
        return cls(url=(url or data.get("url") or DEFAULT_URL).rstrip("/"),
                   token=token or data.get("token"))


class ApiClient:
    """JSON over HTTP to ``<url>/v1``."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.http = httpx.Client(base_url=f"{settings.url}/v1", headers=headers, timeout=60,
                                 transport=transport)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise click.ClickException(f"cannot reach the controller at {self.http.base_url}: {e}") from None
        if r.status_code == 204 or not r.content:
            return {}
        try:
            body = r.json()
        except ValueError:
            body = r.text
        if r.status_code >= 400:
            raise ApiFailure(r.status_code, body)
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        return self.request("POST", path, json=body or {}, params=params or None)

    def resolve(self, collection: str, ref: str) -> str:
        """The UUID of ``ref``, which is a UUID or a unique name in ``collection``."""
        if UUID_RE.match(ref):
            return ref
        found = self.get(f"/{collection}", q=f"name={ref}", fields="uuid", limit=2)
        items = found.get("items", []) if isinstance(found, dict) else []
        if len(items) != 1:
            what = "no" if not items else "more than one"
            raise click.BadParameter(f"{what} {collection} named {ref!r}")
        return str(items[0]["uuid"])

    def wait_job(self, job: dict[str, Any], on_progress: Callable[[dict[str, Any]], None],
                 poll: float = 1.0) -> dict[str, Any]:
        """Long-poll ``GET /jobs/<id>?wait=1`` until the job is final."""
        while job.get("state") not in FINAL_STATES:
            on_progress(job)
            job = self.get(f"/jobs/{job['uuid']}", wait=1, timeout=poll)["job"]
        on_progress(job)
        return job
