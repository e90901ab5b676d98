#!/usr/bin/env bash
# Builds static pspf-edge binaries (CGO off, -trimpath, stripped, version
# stamped) for the boards the agent runs on, writes dist/SHA256SUMS and prints
# a size table.
#
#   scripts/cross-build.sh                 # every target
#   scripts/cross-build.sh arm64 armv7     # some of them
#   TAGS= scripts/cross-build.sh           # with every connector and HTTP/2
#
# TAGS are the build tags, no_postgres,nethttpomithttp2 unless set (README:
# Building for boards): the PostgreSQL sink and pgx add 3.9 MB that few
# gateways need, Go's bundled HTTP/2 0.5 MB (HTTP goes as HTTP/1.1).
#
# Targets: armv6 (Pi Zero / Pi 1), armv7 (Pi 2/3/4 32-bit), arm64 (Pi 3/4/5
# 64-bit, gateways), amd64, riscv64.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${DIST:-dist}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
tags=${TAGS-no_postgres,nethttpomithttp2}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(armv6 armv7 arm64 amd64 riscv64)

# Code that runs at config load or once per TLS handshake is compiled
# without inlining (scripts/cold-packages).
gcflags=()
while read -r p; do
  case $p in '' | '#'*) continue ;; esac
  gcflags+=("-gcflags=$p=-l")
done < scripts/cold-packages

mkdir -p "$out"
for t in "${targets[@]}"; do
  goarm=""
  case "$t" in
    armv6) goarch=arm goarm=6 ;;
    armv7) goarch=arm goarm=7 ;;
    arm64|amd64|riscv64) goarch=$t ;;
    *) echo "cross-build: unknown target $t (armv6 armv7 arm64 amd64 riscv64)" >&2; exit 2 ;;
  esac
  bin="$out/pspf-edge-linux-$t"
  echo "building $bin" >&2
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
    go build -trimpath -buildvcs=false "${gcflags[@]}" -tags "$tags" \
      -ldflags "-s -w -X main.version=$version -X main.commit=$commit" \
      -o "$bin" ./cmd/pspf-edge
done

(cd "$out" && sha256sum pspf-edge-linux-* > SHA256SUMS)
printf '\ntags: %s\n%-28s %12s %8s\n' "${tags:-none}" binary bytes MiB
for f in "$out"/pspf-edge-linux-*; do
  size=$(stat -c %s "$f")
  awk -v n="$(basename "$f")" -v s="$size" 'BEGIN { printf "%-28s %12d %8.2f\n", n, s, s/1048576 }'
done
