#!/usr/bin/env bash
# flash-wear.sh: bytes written to the device per record at low rates, the
# file system's journal included. A benchmark, not a test: `make test` never
# runs it. Needs root (losetup, mount) and the binaries of `make build`,
# bin/kfake-broker and bin/e2ebench.
#
#   sudo scripts/flash-wear.sh [OUT] [e2ebench flags...]
#
# It makes a 256 MiB ext4 image in a temp dir, loop-mounts it, and runs the
# e2ebench low-rate table (MQTT QoS 1 -> Kafka, one connection, 96-byte
# payloads, 100 and 2,000 msg/s, 60 s each) with the agent's --data-dir, and
# only that, on it. Two figures per rate: /proc/PID/io write_bytes (the pages
# the agent dirtied) and the file system's lifetime_write_kbytes (all it sent
# to the device: data, metadata and the jbd2 journal). The loop device, the
# mount and the temp dir are removed on exit, whatever happens.
set -euo pipefail

out=${1:-bench-results/flash-wear}
shift || true
agent=${AGENT:-$PWD/bin/pspf-edge} # AGENT=path: another build of the agent
for b in "$agent" bin/kfake-broker bin/e2ebench; do
	[[ -x $b ]] || { echo "flash-wear: $b missing (make build; go build -o bin/kfake-broker ./internal/kafkatest/cmd/kfake-broker; go build -o bin/e2ebench ./internal/e2ebench/cmd/e2ebench)" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "flash-wear: needs root (losetup, mount)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/pspf-flash-wear.XXXXXX)
dev=""
cleanup() {
	if mountpoint -q "$tmp/mnt" 2>/dev/null; then umount "$tmp/mnt" || umount -l "$tmp/mnt"; fi
	if [[ -n $dev ]]; then losetup -d "$dev"; fi
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

truncate -s 256M "$tmp/ext4.img"
mkfs.ext4 -q -F "$tmp/ext4.img"
dev=$(losetup -f --show "$tmp/ext4.img")
mkdir "$tmp/mnt"
mount -t ext4 -o noatime "$dev" "$tmp/mnt"
counter=/sys/fs/ext4/$(basename "$dev")/lifetime_write_kbytes
[[ -r $counter ]] || { echo "flash-wear: no $counter" >&2; exit 1; }

mkdir -p "$out"
bin/e2ebench -out "$out" -size 96 \
	-agent "pspf-edge=$agent run -p {pipeline} --data-dir $tmp/mnt/data --admin {admin} --log-level warn" \
	-qos0 0 -qos1 0 -rates "" -window 0 -outage 0 -repeats 1 \
	-lowrate-idle 0 -lowrate-qos 1 -lowrate-conns 1 -lowrate-rates 100,2000 -lowrate-duration 60s \
	-lowrate-fs-kbytes "$counter" "$@"
