#!/usr/bin/env bash
# Install labkit on Debian or Ubuntu: system packages, a virtualenv in ./.venv, and /usr/local/bin/labkit.
#
#   sudo ./install.sh          what `labkit up` (netns backend) and `labkit bench` need
#   sudo ./install.sh --dev    also what the test suite needs (pytest, Node.js for the interop tests, sudo and
#                              ansible-core (own venv) for the hosts backend's tests,
#                              Vagrant + libvirt + qemu + debootstrap for the VM end-to-end test)
#
# Safe to run again. Needs root (apt, and the netns backend itself needs root).
set -euo pipefail
cd "$(dirname "$0")"

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (allowed: --dev)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo ./install.sh)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
packages=(python3 python3-venv python3-pip iproute2 iputils-ping iperf3 openssh-server openssh-client
          iptables tcpdump procps psmisc util-linux kmod ca-certificates)
# the tests' existing machines log in as a user with sudo (the hosts backend)
if [ "$dev" = 1 ]; then packages+=(sudo); fi
# Node.js + npm for the interop tests. Some machines already carry a Node.js from elsewhere (NodeSource's
# nodejs bundles npm, and Debian's npm package conflicts with it): only ask apt when a command is missing.
if [ "$dev" = 1 ]; then
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
fi
echo "install.sh: apt packages: ${packages[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

# Python >= 3.11: the first python3 on PATH (pyenv and the like are respected), else the system's.
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  py=/usr/bin/python3
fi
"$py" -c 'import sys; assert sys.version_info >= (3, 11), "labkit needs Python >= 3.11"'
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q -e .
fi
ln -sf "$PWD/.venv/bin/labkit" /usr/local/bin/labkit
# Ansible's own reader, for the tests that read inventories both ways: a venv of its own (ansible-core pins
# its dependencies; labkit does not depend on it)
if [ "$dev" = 1 ]; then
  [ -x .venv-ansible/bin/python ] || "$py" -m venv .venv-ansible
  .venv-ansible/bin/python -m pip install -q 'ansible-core>=2.15,<2.20'
fi

# sshd's privilege-separation directory (the openssh-server package creates it at boot with systemd)
mkdir -p /run/sshd

if [ "$dev" = 1 ] && [ -x .ci/vagrant.sh ]; then
  bash .ci/vagrant.sh
fi
if [ "$dev" = 1 ] && [ -x .ci/docker.sh ]; then bash .ci/docker.sh; fi
echo "install.sh: done: $(labkit --version)"
