#!/bin/sh
# Make sure a lab host has the commands labkit needs; run as root on the host (labkit uploads and runs it).
#
#   host-packages.sh COMMAND:PACKAGE ...      e.g. python3:python3 iperf3:iperf3 tc:iproute2
#
# Commands already there are left alone. For the missing ones it tries the distribution's mirror (apt, with
# short timeouts: classroom networks are often closed and the test VMs have no route out at all). Prints
# "OK" and exits 0 when everything is there, else prints "MISSING: pkg1 pkg2" and exits 3.
set -u

missing=""
for pair in "$@"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 && continue
  case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
done
missing=${missing# }
[ -z "$missing" ] && { echo OK; exit 0; }

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  opts="-o Acquire::Retries=0 -o Acquire::http::Timeout=10 -o Acquire::https::Timeout=10 -o DPkg::Lock::Timeout=120"
  echo "installing: $missing"
  # shellcheck disable=SC2086
  if timeout 120 apt-get $opts -q update >/tmp/labkit-apt.log 2>&1 &&
     timeout 600 apt-get $opts -q -y --no-install-recommends install $missing >>/tmp/labkit-apt.log 2>&1; then
    echo OK; exit 0
  fi
fi
echo "MISSING: $missing"
exit 3
