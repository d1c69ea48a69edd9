#!/usr/bin/env bash
# What the Vagrant end-to-end test needs on a Debian 12 machine (CI, or a developer's), as root; safe to rerun.
# install.sh --dev calls it. Steps, each timed:
#   1. apt: vagrant, vagrant-libvirt, libvirt (daemon + virsh), qemu (system x86 + qemu-img), debootstrap,
#      dnsmasq-base (DHCP on the isolated management network);
#   2. /dev/kvm: group kvm, mode 0660, as udev does on a normal system. Without it libvirt decides on every
#      call that "KVM is not available now", throws its cached qemu capabilities away and probes qemu again
#      (about 40 s per domain define). The VMs still run as domain type qemu (software emulation): KVM does
#      not work here (no vmx/svm), and labkit picks `qemu` by itself when it cannot;
#   3. virtlogd and libvirtd started as daemons (no systemd here) when not running;
#   4. the test box: `labkit box build`, cached in /var/cache/labkit keyed by its recipe (a rerun takes
#      seconds), added to Vagrant and loaded into libvirt's default pool.
set -euo pipefail
cd "$(dirname "$0")/.."

t() { local t0=$SECONDS; "$@"; echo "vagrant.sh: $1 took $((SECONDS - t0)) s" >&2; }

packages=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils debootstrap
          dnsmasq-base e2fsprogs)
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}
echo "vagrant.sh: apt packages: ${packages[*]}"
t apt_install

if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

start_daemons() {
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 50); do virsh -q -c qemu:///system uri >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "vagrant.sh: libvirtd does not answer on qemu:///system" >&2
  return 1
}
t start_daemons

labkit=.venv/bin/labkit
[ -x "$labkit" ] || labkit=labkit
box_build() { "$labkit" box build; }
t box_build >/dev/null
