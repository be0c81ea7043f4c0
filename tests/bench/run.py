"""``make bench``: run every tests/bench/bench_*.py module's ``main()``.

Each writes bench/results/<benchmark>.json. ``BENCH=name1,name2`` runs a subset.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path


def main() -> int:
    wanted = {w for w in os.environ.get("BENCH", "").split(",") if w}
    failed = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        print(f"== benchmark {name}", flush=True)
        try:
            importlib.import_module(f"tests.bench.{path.stem}").main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
