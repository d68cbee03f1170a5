"""Benchmark: the first site.yml run on a fresh three-host lab vs the second (no-op) run.

Not a test: run with `make bench-site` (or `.venv/bin/python bench/bench_site.py`). It destroys
and recreates the lab containers, times both runs, checks that the second reports changed=0 and
prints the two figures and their ratio (target: second run under a quarter of the first).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = [str(ROOT / ".venv/bin/ansible-playbook")]
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   re.MULTILINE)


def run(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([*PLAYBOOK, *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"})
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"ansible-playbook {' '.join(args)} failed:\n{done.stdout[-4000:]}")
    return elapsed, done.stdout


def changed_total(output: str) -> int:
    return sum(int(match[2]) for match in RECAP.findall(output))


def main() -> None:
    release = os.environ.get("LAB_DEBIAN", "12")
    subprocess.run(["bash", "scripts/build-base-image.sh", release], cwd=ROOT, check=True)
    run("playbooks/lab_down.yml")
    run("playbooks/lab_up.yml")
    first, first_out = run("site.yml")
    second, second_out = run("site.yml")
    ratio = second / first
    print(f"Debian {release} lab, three hosts")
    print(f"first site.yml run:  {first:7.1f} s (changed={changed_total(first_out)})")
    print(f"second site.yml run: {second:7.1f} s (changed={changed_total(second_out)})")
    print(f"ratio second/first:  {ratio:7.2f} (target < 0.25)")
    if changed_total(second_out) != 0:
        sys.exit("the second run changed something: it must report changed=0")


if __name__ == "__main__":
    main()
