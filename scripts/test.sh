#!/usr/bin/env bash
# Every test of the project, from a fresh Debian machine: set-up, linters, the pytest suite (SQL,
# modules, ETL, AWS against real servers), and the molecule scenarios in Docker.
# Usage: scripts/test.sh [stage ...]   stages: lint pytest default replication replication-debian13
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
results=$root/.test-results

stages=("$@")
[ "${#stages[@]}" -eq 0 ] && stages=(lint pytest default replication replication-debian13)

bash scripts/bootstrap.sh || { echo "test: bootstrap failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$root/.venv/bin:$PATH"
rm -rf "$results" && mkdir -p "$results"

failed_stages=()
run_stage() {
  local name=$1; shift
  local started=$SECONDS
  echo "=== test: $name"
  if "$@"; then
    echo "=== test: $name passed in $((SECONDS - started))s"
  else
    echo "=== test: $name FAILED in $((SECONDS - started))s"
    failed_stages+=("$name")
  fi
}

lint() {
  # check_specs: roles' argument specs vs defaults, modules' DOCUMENTATION vs argument spec.
  ruff check . && yamllint -s . && ansible-lint -q && python3 scripts/check_specs.py
}

molecule_scenario() {
  local scenario=$1 release=12
  [ "$scenario" = replication-debian13 ] && release=13
  bash scripts/build-base-image.sh "$release" && molecule test -s "$scenario"
}

for stage in "${stages[@]}"; do
  case "$stage" in
    lint) run_stage lint lint ;;
    pytest) run_stage pytest pytest -q -p no:cacheprovider --junitxml="$results/pytest.xml" tests ;;
    default|replication|replication-debian13) run_stage "molecule $stage" molecule_scenario "$stage" ;;
    *) echo "test: unknown stage '$stage'"; failed_stages+=("$stage") ;;
  esac
done

# One closing line for every test run above (pytest and the molecule verifiers write JUnit XML);
# a stage that failed before its tests ran counts as one failure.
python3 - "$results" "${#failed_stages[@]}" "${failed_stages[*]:-}" <<'PY'
import sys, xml.etree.ElementTree as ET
from pathlib import Path
passed = failed = skipped = 0
for report in Path(sys.argv[1]).glob("*.xml"):
    for suite in ET.parse(report).getroot().iter("testsuite"):
        total, skip = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        passed += total - skip - bad; failed += bad; skipped += skip
failed_stages = int(sys.argv[2])
if failed_stages and not failed:
    failed = failed_stages
if failed_stages:
    print(f"test: failed stages: {sys.argv[3]}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
[ "${#failed_stages[@]}" -eq 0 ]
