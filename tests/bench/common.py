"""What every benchmark shares: the result file format of DESIGN.md."""

from __future__ import annotations

import datetime as dt
import json
import platform
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass
class Result:
    name: str
    value: float
    unit: str
    better: Literal["higher", "lower"]
    baseline_name: str | None = None
    baseline: float | None = None
    ratio: float | None = None

    @classmethod
    def against(cls, name: str, value: float, unit: str, better: Literal["higher", "lower"],
                baseline_name: str, baseline: float) -> Result:
        """A result beside a baseline measured in the same run; ratio = value/baseline."""
        return cls(name, value, unit, better, baseline_name, baseline,
                   round(value / baseline, 4) if baseline else None)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.platform()}"


def write(benchmark: str, results: list[Result], command: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{benchmark}.json"
    doc = {
        "benchmark": benchmark,
        "machine": machine(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "results": [{k: v for k, v in asdict(r).items() if v is not None} for r in results],
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return out


def keep(benchmark: str, results: list[Result], partial: bool) -> None:
    """A full run's results replace the committed ones; a smaller run's are only printed."""
    if results and not partial:
        write(benchmark, results, command=f"make bench BENCH={benchmark}")
    elif results:
        print(json.dumps([asdict(r) for r in results], indent=1))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    vs = sorted(values)
    k = max(0, min(len(vs) - 1, round(p / 100 * (len(vs) - 1))))
    return vs[k]


def median(values: list[float]) -> float:
    return statistics.median(values)
