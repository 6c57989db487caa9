"""Run every benchmark script (``bench_*.py``) in its own process and print its ratios.

    python benchmarks/run.py            # full size (about 100M float32 parameters)
    python benchmarks/run.py --quick    # small smoke size

Each script measures polyparam against the framework-native way in the same run
and prints ratios; absolute times on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.call([sys.executable, str(script), *sys.argv[1:]]) != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
