#!/usr/bin/env bash
# Build (or reuse) a systemd-capable Debian base image for the lab and molecule.
# Usage: scripts/build-base-image.sh 12|13
# No container registry answers on offline machines: try a pull first, and when it fails build the
# image with debootstrap from the mirror this host's own apt sources use, then `docker import` it.
set -euo pipefail

release=${1:?usage: build-base-image.sh 12|13}
case "$release" in
  12) suite=bookworm ;;
  13) suite=trixie ;;
  *) echo "build-base-image: unsupported Debian release '$release' (use 12 or 13)" >&2; exit 2 ;;
esac
image="mariadb-lab/debian-systemd:$release"
packages=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,ca-certificates,sudo,gnupg

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-base-image: $image already present"
  exit 0
fi

# The host's apt sources name the mirror we are allowed to reach (deb822 or one-line format).
host_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' \
          | grep -E '/debian/?$' | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

mirror=$(host_mirror)
security_mirror="${mirror%/debian}/debian-security"
if [ "$suite" = trixie ] || [ "$suite" = bookworm ]; then security_suite="$suite-security"; fi

echo "build-base-image: trying a registry pull of a Debian $release image"
if timeout 60 docker pull "debian:$release" >/dev/null 2>&1; then
  # A registry answered: add systemd and python on top of the official image.
  cid=$(docker create "debian:$release" sh -c "apt-get update && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends ${packages//,/ } && rm -f /etc/machine-id")
  docker start -a "$cid"
  docker commit --change 'CMD ["/sbin/init"]' "$cid" "$image"
  docker rm "$cid" >/dev/null
  exit 0
fi

echo "build-base-image: no registry; debootstrap $suite from $mirror"
command -v debootstrap >/dev/null || { echo "build-base-image: debootstrap is not installed" >&2; exit 1; }
rootfs=$(mktemp -d /var/tmp/debian-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# One retry: a mirror hiccup should not fail a whole CI run.
for attempt in 1 2; do
  if debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
       >"$rootfs.log" 2>&1; then
    break
  fi
  echo "build-base-image: debootstrap attempt $attempt failed:" >&2
  tail -n 20 "$rootfs.log" >&2
  [ "$attempt" -eq 2 ] && exit 1
  rm -rf "$rootfs" && mkdir -p "$rootfs"
done
rm -f "$rootfs.log"

cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $security_suite main
SOURCES
# Containers get their machine-id from systemd at boot; a baked one would be shared by all hosts.
: > "$rootfs/etc/machine-id"
# Units that make no sense in a container and slow its boot.
for unit in systemd-remount-fs.service getty.target console-getty.service systemd-logind.service \
            apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# Keep the package lists so the first apt install works; roles still refresh them.
chroot "$rootfs" apt-get update -qq || true
chroot "$rootfs" apt-get clean

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/sbin/init"]' --change 'ENV container=docker' \
  - "$image" >/dev/null
echo "build-base-image: built $image"
