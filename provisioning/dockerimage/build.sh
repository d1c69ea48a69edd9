#!/bin/bash
# Build the root filesystem of labkit's Docker host image (the docker backend: one container per lab host).
#
#   build.sh OUT_DIR SUITE MIRROR [DEB_CACHE_DIR]
#
# Writes into OUT_DIR: rootfs.tar (the root of a minbase Debian SUITE, numeric owners, for `docker import`),
# packages.txt (what the image holds) and debootstrap.log. Needs root and debootstrap; no Docker registry:
# labkit.dockerimage imports rootfs.tar into the engine itself. DEB_CACHE_DIR is debootstrap's --cache-dir,
# shared with the Vagrant test box (provisioning/testbox/build.sh), so a second build downloads nothing.
# The container: no kernel, no init, no systemd. sshd is its main process, started by the backend with
# labkit's own host key and config bind-mounted at /etc/labkit-ssh (so the image has no host keys, only
# /run/sshd); python3 without venv/pip (labkit brings pip in its wheelhouse), iproute2 (ip, tc), ping,
# iperf3, procps, psmisc, tcpdump, ethtool, and iptables (the userspace shaping engine's NFQUEUE rules).
set -euo pipefail

OUT=${1:?OUT_DIR}; SUITE=${2:?SUITE}; MIRROR=${3:?MIRROR}; DEBCACHE=${4:-}

T0=$SECONDS; TSTEP=$SECONDS
step() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; TSTEP=$SECONDS; }
took() { echo "  took $((SECONDS - TSTEP)) s"; }

ROOT="$OUT/root"
rm -rf "$OUT"; mkdir -p "$OUT" "$ROOT"
[ -n "$DEBCACHE" ] && mkdir -p "$DEBCACHE"
# debootstrap mounts /proc and /sys in the target while package scripts run; never leave them behind
cleanup() { umount -R "$ROOT/proc" "$ROOT/sys" 2>/dev/null || true; }
trap cleanup EXIT

step "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase ${DEBCACHE:+--cache-dir="$DEBCACHE"} \
  --include=openssh-server,python3,iproute2,iputils-ping,iperf3,procps,tcpdump,iptables,ethtool,ca-certificates,psmisc \
  "$SUITE" "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 || { tail -20 "$OUT/debootstrap.log"; exit 1; }
cleanup
took

step "configure the container root"
# labkit brings each host's sshd host key and config; the package's keys would be shared by every container
rm -f "$ROOT"/etc/ssh/ssh_host_*
# sshd's privilege-separation directory (made by systemd's tmpfiles on a booted system; no init here)
install -d -m 0755 "$ROOT/run/sshd"
# no daemon starts from package scripts in a later apt-get inside a container (there is no init to ask)
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"; chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
# Docker manages these per container (bind mounts); leave nothing of this machine's in the image
: >"$ROOT/etc/resolv.conf"
echo labkit-host >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"
: >"$ROOT/etc/machine-id"
chroot "$ROOT" dpkg-query -W -f '${Package} ${Version}\n' >"$OUT/packages.txt"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old \
  "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
  "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/lintian "$ROOT"/tmp/* "$ROOT"/root/.bash_history
# the engine gives every container its own /dev, /proc and /sys: the image keeps empty mount points
rm -rf "$ROOT/dev" "$ROOT/proc" "$ROOT/sys"
mkdir -p "$ROOT/dev" "$ROOT/proc" "$ROOT/sys"
took

step "rootfs.tar"
tar --numeric-owner --xattrs -C "$ROOT" -cf "$OUT/rootfs.tar" .
rm -rf "$ROOT"
du -sh "$OUT"/* | sed 's/^/  /'
echo "  $(wc -l <"$OUT/packages.txt") packages"
took
step "done in $((SECONDS - T0)) s"
