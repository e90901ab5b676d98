#!/usr/bin/env bash
# deps.sh: what the tests need from the machine, checked in a blink and, as
# root with apt-get, installed. `make test` and .ci/run call it first.
#
#   scripts/deps.sh          everything `make test` needs (the default)
#   scripts/deps.sh hwlab    what scripts/hwlab/hwlab.sh needs
#   scripts/deps.sh bench    what `make bench` needs
#
# When something is missing: as root with apt-get, one `apt-get update` and
# one `apt-get install` of exactly the missing Debian packages; otherwise it
# stops at once with one message naming them and the command that installs
# them. When nothing is missing it changes nothing (a few milliseconds).
#
# Why each one is needed:
#   gcc, libc6-dev        go test -race builds with cgo
#   git, make             make lint lists files with git; make build stamps the version
#   mosquitto             the MQTT source and sink tests start their own broker
#                         (mosquitto_passwd for the authentication tests)
#   kcat                  the Kafka e2e test reads the broker with a real client
#   postgresql            the postgres sink tests run their own server (initdb and
#                         postgres from /usr/lib/postgresql/VER/bin, in a temp dir)
#   qemu-user-static      the armv7/arm64 binaries run under user-mode emulation
#   systemd               systemd-analyze checks the packaged unit
#   dpkg, passwd          the package install test: dpkg, useradd, groupadd run
#                         inside its private root (never on this machine's own)
#   the hwlab set         scripts/hwlab boots Debian's kernels in QEMU and builds
#                         gpio-sim: qemu-system-arm qemu-system-x86 gcc-12
#                         gcc-12-aarch64-linux-gnu cpio xz-utils libelf1 libssl3
# Root: the package install test mounts its private root in a mount
# namespace of its own, which needs root.
set -euo pipefail

group=${1:-test}
# A user's PATH often lacks the sbin directories, where mosquitto and useradd
# live; the tests look there too.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

# "command:package" (a command on PATH) or "pkg:package" (a library package,
# checked with dpkg-query).
hwlab=(
  qemu-system-aarch64:qemu-system-arm qemu-system-x86_64:qemu-system-x86
  gcc-12:gcc-12 aarch64-linux-gnu-gcc-12:gcc-12-aarch64-linux-gnu
  make:make cpio:cpio xz:xz-utils flock:util-linux
  pkg:libelf1 pkg:libssl3
)
case "$group" in
test)
  need=(
    gcc:gcc pkg:libc6-dev git:git make:make
    mosquitto:mosquitto mosquitto_passwd:mosquitto kcat:kcat pkg:postgresql
    qemu-arm-static:qemu-user-static qemu-aarch64-static:qemu-user-static
    systemd-analyze:systemd
    dpkg:dpkg dpkg-deb:dpkg dpkg-query:dpkg useradd:passwd groupadd:passwd
    "${hwlab[@]}"
  )
  root=yes
  ;;
hwlab) need=("${hwlab[@]}") root=no ;;
bench) need=(gcc:gcc pkg:libc6-dev mosquitto:mosquitto mosquitto_sub:mosquitto-clients pkg:postgresql) root=no ;;
*) echo "deps.sh: unknown group $group (test, hwlab, bench)" >&2; exit 2 ;;
esac

missing=()
add() { case " ${missing[*]} " in *" $1 "*) ;; *) missing+=("$1") ;; esac; }
libs=()
for e in "${need[@]}"; do
  cmd=${e%%:*} pkg=${e#*:}
  if [ "$cmd" = pkg ]; then
    libs+=("$pkg")
  elif ! command -v "$cmd" >/dev/null 2>&1; then
    add "$pkg"
  fi
done
if [ ${#libs[@]} -gt 0 ]; then
  if command -v dpkg-query >/dev/null 2>&1; then
    # One call for all of them: installed ones print "NAME install ok installed".
    ok=$(dpkg-query -W -f='${Package} ${Status}\n' "${libs[@]}" 2>/dev/null | awk '$4 == "installed" { print $1 }' || true)
    for p in "${libs[@]}"; do
      grep -qx "$p" <<<"$ok" || add "$p"
    done
  else
    for p in "${libs[@]}"; do add "$p"; done
  fi
fi

uid=$(id -u)
if [ ${#missing[@]} -gt 0 ] && [ "$uid" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends --no-upgrade "${missing[@]}" >&2
  exit 0
fi

if [ ${#missing[@]} -eq 0 ] && { [ "$root" = no ] || [ "$uid" = 0 ]; }; then
  exit 0
fi

# One message: everything that is missing, and the one command that fixes it.
{
  echo "deps.sh: the $group step cannot run on this machine:"
  [ ${#missing[@]} -eq 0 ] || echo "  missing Debian packages: ${missing[*]}"
  [ "$root" = no ] || [ "$uid" = 0 ] || echo "  not root: the package install test (internal/packaging) runs dpkg in a private root in a mount namespace of its own, which needs root"
  if ! command -v apt-get >/dev/null 2>&1 && [ ${#missing[@]} -gt 0 ]; then
    echo "This machine has no apt-get: install those packages (Debian names) or their equivalents, then run it again."
  elif [ "$group" = test ]; then
    echo "Run instead:  sudo make test   (it installs them with apt-get first)"
  else
    echo "Install them with:  sudo scripts/deps.sh $group"
  fi
} >&2
exit 1
