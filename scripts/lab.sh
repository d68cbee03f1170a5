#!/usr/bin/env bash
# The local lab: three Debian containers (systemd as PID 1) and site.yml run against them.
# Usage: scripts/lab.sh [up|aux|site|down]   (default: up = bootstrap, containers, site.yml)
#        aux: add the proxy/backup container of inventory/lab-aux to a running lab (HAProxy)
#        LAB_DEBIAN=13 scripts/lab.sh     for Debian 13 hosts (MariaDB 11.8)
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-up}
release=${LAB_DEBIAN:-12}
export LAB_DEBIAN=$release

case "$action" in
  up)
    bash scripts/bootstrap.sh
    bash scripts/build-base-image.sh "$release"
    .venv/bin/ansible-playbook playbooks/lab_up.yml
    .venv/bin/ansible-playbook site.yml
    ;;
  aux)
    .venv/bin/ansible-playbook -i inventory/lab -i inventory/lab-aux playbooks/lab_up.yml
    .venv/bin/ansible-playbook -i inventory/lab -i inventory/lab-aux site.yml "${@:2}"
    ;;
  site)
    .venv/bin/ansible-playbook site.yml "${@:2}"
    ;;
  down)
    .venv/bin/ansible-playbook playbooks/lab_down.yml
    ;;
  *)
    echo "usage: scripts/lab.sh [up|aux|site|down]" >&2
    exit 2
    ;;
esac
