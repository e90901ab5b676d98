#!/usr/bin/env bash
# Prints the size of the stripped, static pspf-edge binary per build tag set
# (README: Building for boards), as a Markdown table, built with the flags of
# make build and scripts/cross-build.sh.
#
#   scripts/size-table.sh                       # amd64 and arm64
#   scripts/size-table.sh arm64                 # one architecture
#   TAGSETS="no_postgres no_kafka,no_postgres" scripts/size-table.sh
set -euo pipefail
cd "$(dirname "$0")/.."

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
# make build's set, each tag alone (what it saves from the full build), and
# sets for boards that need less, with make build's nethttpomithttp2.
read -r -a sets <<< "${TAGSETS:-no_postgres,nethttpomithttp2 default no_postgres nethttpomithttp2 no_kafka_source no_kafka no_mqtt no_http no_serial no_gpio no_kafka,no_postgres,nethttpomithttp2 no_kafka,no_http,no_postgres,no_gpio,nethttpomithttp2 no_kafka,no_mqtt,no_http,no_postgres,no_serial,no_gpio,nethttpomithttp2}"
# Built as scripts/cross-build.sh builds: the cold packages without inlining.
gcflags=()
while read -r p; do
  case $p in '' | '#'*) continue ;; esac
  gcflags+=("-gcflags=$p=-l")
done < scripts/cold-packages
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '| tags |'; for a in "${arches[@]}"; do printf ' %s bytes | %s MiB |' "$a" "$a"; done; echo
printf '|---|'; for a in "${arches[@]}"; do printf -- '---:|---:|'; done; echo
for s in "${sets[@]}"; do
  tags=$s; [ "$s" = default ] && tags=""
  printf '| %s |' "${s//,/ }"
  for a in "${arches[@]}"; do
    CGO_ENABLED=0 GOOS=linux GOARCH=$a go build -trimpath -buildvcs=false "${gcflags[@]}" -tags "$tags" \
      -ldflags '-s -w' -o "$tmp/bin" ./cmd/pspf-edge
    size=$(stat -c %s "$tmp/bin")
    awk -v s="$size" 'BEGIN { printf " %d | %.2f |", s, s/1048576 }'
  done
  echo
done
