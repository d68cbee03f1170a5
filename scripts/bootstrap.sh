#!/usr/bin/env bash
# Install everything the lab and the tests need on a Debian control node, idempotently:
# Debian packages (Docker engine, debootstrap, MariaDB server and tools for the SQL tests), a Python venv with
# the pinned requirements, and the Ansible collections. Starts dockerd when none answers.
# Usage: scripts/bootstrap.sh [--no-docker]
set -euo pipefail
cd "$(dirname "$0")/.."

want_docker=1
[ "${1:-}" = "--no-docker" ] && want_docker=0

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"; fi
}

# --- Debian packages ---------------------------------------------------------------------------
# mariadb-backup, percona-toolkit and prometheus-mysqld-exporter: the backup and health tests run
# Debian's tools on the control node against local servers (they skip without them); haproxy and
# socat likewise for the proxy's restart test (tests/test_proxy_agent.py).
debs=(debootstrap mariadb-server mariadb-client mariadb-backup percona-toolkit
  prometheus-mysqld-exporter haproxy socat make python3-venv git)
[ "$want_docker" -eq 1 ] && debs+=(docker.io)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# A docker client that is not Debian's (e.g. /usr/local/bin/docker) is fine, but dockerd must exist.
if [ "$want_docker" -eq 1 ] && command -v dockerd >/dev/null; then
  missing=("${missing[@]/docker.io}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
  [ -r /etc/debian_version ] || die "this control node is not Debian; install by hand: ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # The host's own mariadb service is not used by the tests (they start their own mariadbd).
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- Docker engine -----------------------------------------------------------------------------
if [ "$want_docker" -eq 1 ] && ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    as_root systemctl start docker
  else
    # No systemd as PID 1 (CI sandboxes, containers): run the daemon in the background.
    say "starting dockerd in the background (log: /var/log/dockerd-lab.log)"
    as_root sh -c 'nohup dockerd >/var/log/dockerd-lab.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not come up; see /var/log/dockerd-lab.log"
fi

# --- Python venv -------------------------------------------------------------------------------
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating .venv with requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

# --- Collections -------------------------------------------------------------------------------
# Galaxy first (ordinary users); offline, the collections bundled in the `ansible` package serve.
if [ ! -f collections/.installed ]; then
  mkdir -p collections
  # ansible-galaxy succeeds without downloading when the bundled versions already satisfy it.
  if timeout 60 .venv/bin/ansible-galaxy collection install -r requirements.yml -p collections \
       >/dev/null 2>&1 && [ -n "$(ls -A collections/ansible_collections 2>/dev/null)" ]; then
    say "collections installed from Ansible Galaxy into collections/"
  else
    say "using the collections bundled in the ansible package (Galaxy unreachable or not needed)"
  fi
  touch collections/.installed
fi
say "ready"
