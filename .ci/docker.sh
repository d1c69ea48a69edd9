#!/usr/bin/env bash
# What the docker backend and its tests need on a Debian 12 machine (CI, or a developer's), as root; safe to rerun.
# install.sh --dev calls it. Steps, each timed:
#   1. apt: docker.io (Debian's Docker engine) and debootstrap, when dockerd or debootstrap is missing;
#   2. dockerd started as a daemon when the engine does not answer (no systemd here), its log in
#      /var/log/labkit-dockerd.log; waits up to 30 s for the socket to answer;
#   3. the host image: `labkit image build` (debootstrap + docker import, no registry), kept in the engine and
#      keyed by its recipe (a rerun takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

t() { local t0=$SECONDS; "$@"; echo "docker.sh: $1 took $((SECONDS - t0)) s" >&2; }

py=.venv/bin/python
[ -x "$py" ] || py=python3
labkit=.venv/bin/labkit
[ -x "$labkit" ] || labkit=labkit

packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}
if [ ${#packages[@]} -gt 0 ]; then
  echo "docker.sh: apt packages: ${packages[*]}"
  t apt_install
fi

# the Docker SDK labkit uses (in .venv), else the docker CLI that comes with docker.io
engine_answers() {
  if "$py" -c 'import docker' 2>/dev/null; then
    "$py" -c 'import docker; docker.from_env(timeout=5).ping()' >/dev/null 2>&1
  else
    timeout 10 docker info >/dev/null 2>&1
  fi
}
start_dockerd() {
  engine_answers && return 0
  if ! pgrep -x dockerd >/dev/null; then
    echo "docker.sh: starting dockerd (log: /var/log/labkit-dockerd.log)"
    setsid dockerd >/var/log/labkit-dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 60); do engine_answers && return 0; sleep 0.5; done
  echo "docker.sh: dockerd does not answer on /var/run/docker.sock after 30 s; its log ends with:" >&2
  tail -5 /var/log/labkit-dockerd.log >&2 || true
  return 1
}
t start_dockerd

image_build() { "$labkit" image build; }
t image_build >/dev/null
