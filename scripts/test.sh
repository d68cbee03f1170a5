#!/usr/bin/env bash
# Every test of the project, from a fresh Debian machine: set-up, linters, the pytest suite (SQL,
# modules, ETL, AWS against real servers), and the molecule scenarios in Docker.
# Usage: scripts/test.sh [stage ...]   stages: lint pytest default replication replication-debian13
#
# Without arguments the stages run in three lanes at once (the work waits on servers, fsync and
# Docker far more than on the CPU: one lane after another takes about twice as long). Stages named
# on the command line run one after another. TEST_LANES=1 forces the serial order.
# Every stage writes its output to .test-results/STAGE.log; failed stages are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
results=$root/.test-results

bash scripts/bootstrap.sh || { echo "test: bootstrap failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$root/.venv/bin:$PATH"
rm -rf "$results" && mkdir -p "$results"

lint() {
  # check_specs: roles' argument specs vs defaults, modules' DOCUMENTATION vs argument spec.
  ruff check . && yamllint -s . && ansible-lint -q && python3 scripts/check_specs.py
}

molecule_scenario() {
  # The release of the lab's base image (.config/molecule/config.yml reads LAB_DEBIAN).
  local scenario=$1 release=12
  [ "$scenario" = replication-debian13 ] && release=13
  bash scripts/build-base-image.sh "$release" && LAB_DEBIAN=$release molecule test -s "$scenario"
}

stage_command() {
  case "$1" in
    lint) lint ;;
    pytest) pytest -q -p no:cacheprovider --junitxml="$results/pytest.xml" tests ;;
    default|replication|replication-debian13) molecule_scenario "$1" ;;
    *) echo "test: unknown stage '$1'"; return 2 ;;
  esac
}

# One stage: output to its log, one line when it starts and one when it ends, a marker file when
# it failed (lanes run in subshells, so a shell array would not survive).
run_stage() {
  local name=$1 started=$SECONDS
  echo "=== test: $name started ($(date +%H:%M:%S))"
  if stage_command "$name" >"$results/$name.log" 2>&1; then
    echo "=== test: $name passed in $((SECONDS - started))s"
  else
    echo "=== test: $name FAILED in $((SECONDS - started))s (log: .test-results/$name.log)"
    touch "$results/$name.failed"
  fi
}

run_lane() {
  local stage
  for stage in "$@"; do run_stage "$stage"; done
}

if [ "$#" -gt 0 ]; then
  run_lane "$@"
elif [ "${TEST_LANES:-3}" = 1 ]; then
  run_lane lint pytest default replication replication-debian13
else
  # The longest stage (Debian 12, the operations drills) has a lane of its own; the backup drills
  # run in the Debian 13 scenario (molecule/replication/tests/drills.py). Each scenario builds its
  # base image first if missing, the two releases at once (default, last, reuses Debian 12's).
  run_lane replication &
  run_lane replication-debian13 default &
  run_lane lint pytest &
  wait
fi

# The failed stages' own output last (CI keeps the end of the output), then one closing line for
# every test run above (pytest and the molecule verifiers write JUnit XML); a stage that failed
# before its tests ran counts as one failure.
failed_stages=()
for marker in "$results"/*.failed; do
  [ -e "$marker" ] || continue
  name=$(basename "$marker" .failed)
  failed_stages+=("$name")
  echo "=== test: the end of $name's output"
  tail -n 150 "$results/$name.log"
done

python3 - "$results" "${#failed_stages[@]}" "${failed_stages[*]:-}" <<'PY'
import sys, xml.etree.ElementTree as ET
from pathlib import Path
passed = failed = skipped = 0
failures = []
for report in sorted(Path(sys.argv[1]).glob("*.xml")):
    for suite in ET.parse(report).getroot().iter("testsuite"):
        total, skip = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed += total - skip - bad; failed += bad; skipped += skip
        for case in suite.iter("testcase"):
            problem = case.find("failure")
            problem = problem if problem is not None else case.find("error")
            if problem is not None:
                reason = (problem.get("message") or "").splitlines()[:1]
                failures.append(f"{report.stem}: {case.get('classname')}::{case.get('name')}"
                                f" ({float(case.get('time', 0)):.0f}s) {reason[0][:300] if reason else ''}")
failed_stages = int(sys.argv[2])
if failed_stages and not failed:
    failed = failed_stages
for line in failures:
    print(f"test: FAILED {line}")
if failed_stages:
    print(f"test: failed stages: {sys.argv[3]}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
[ "${#failed_stages[@]}" -eq 0 ]
