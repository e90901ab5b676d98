#!/usr/bin/env bash
# hwlab: runs the cross-compiled pspf-edge binary in throw-away QEMU VMs (pure
# emulation, -accel tcg) on Debian's stock arm64 and amd64 kernels, with a
# simulated GPIO chip (gpio-sim, built out of tree) and real 16550 UARTs, and
# prints a summary table. See README.md beside this file.
#
#   scripts/hwlab/hwlab.sh                      # every scenario, both architectures
#   HWLAB_ARCHES=arm64 scripts/hwlab/hwlab.sh smoke serial
#
# Environment:
#   HWLAB_CACHE    cache directory (default: <repo>/.cache/hwlab)
#   HWLAB_ARCHES   architectures to boot (default: "arm64 amd64")
#   HWLAB_TIMEOUT  seconds one VM may run before it is killed (default: 120)
#   HWLAB_REFRESH  1 = refresh the package index and take the newest kernel ABI
#   HWLAB_JOBS     1 = boot the architectures one after the other (default 2)
#   HWLAB_DIST     use the pspf-edge-linux-<arch> binaries in this directory
#                  instead of cross-building the work tree
#
# Everything downloaded or built lives under HWLAB_CACHE; the first run takes a
# few minutes, later ones reuse it. The host's apt configuration is only read:
# packages of the other architecture come through a private index in the cache.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${HWLAB_CACHE:-$repo/.cache/hwlab}
arches=${HWLAB_ARCHES:-arm64 amd64}
vm_timeout=${HWLAB_TIMEOUT:-120}
all_scenarios=(smoke gpio-edge gpio-counter gpio-level serial kill-restart)

log() { printf 'hwlab: %s\n' "$*" >&2; }
die() { printf 'hwlab: FAIL: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t_start=$(now)
mkdir -p "$cache"
exec 9>"$cache/lock"
if ! flock -n 9; then
  log "waiting for another hwlab run on $cache"
  flock 9 || die "cannot lock $cache/lock"
fi
# The module builds use Debian's amd64 kbuild tools and an x86-64 cross
# compiler for arm64: the host must be amd64 (as the project's machines are).
host_arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
[ "$host_arch" = amd64 ] || die "hwlab runs on an amd64 Debian host; this one is $host_arch"

# ---------------------------------------------------------------- host tools
# QEMU, the cross compiler, kbuild's libraries: scripts/deps.sh hwlab checks
# them and installs the missing ones as root with apt-get (make test has run
# it already); elsewhere it fails and names them.
install_host_tools() {
  "$repo/scripts/deps.sh" hwlab >"$cache/apt-host.log" 2>&1 || { cat "$cache/apt-host.log" >&2; die "host tools missing"; }
}

# ------------------------------------------------- private apt index and debs
# A private index reads the machine's configured sources (never changes them)
# for both architectures, with state, lists and archives of its own.
aptdir=$cache/apt
apt_opts=(
  -o "Dir::State=$aptdir/state" -o "Dir::State::Lists=$aptdir/lists"
  -o "Dir::State::status=$aptdir/status" -o "Dir::Cache=$aptdir/cache"
  -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$aptdir/prefs"
  -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
  -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1" -q
)
apt_index() {
  if [ -f "$aptdir/updated" ] && [ "${HWLAB_REFRESH:-0}" != 1 ]; then return 0; fi
  mkdir -p "$aptdir/state" "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/prefs"
  : >"$aptdir/status"
  log "updating the private package index"
  apt-get "${apt_opts[@]}" update >"$aptdir/update.log" 2>&1 || { cat "$aptdir/update.log" >&2; die "private apt-get update failed"; }
  touch "$aptdir/updated"
}
# deb PKG[:ARCH] -> path of the .deb in the cache (downloaded once).
debdir=$cache/debs
deb() {
  local spec=$1 name arch f
  name=${spec%%:*}; arch=${spec#*:}; [ "$arch" != "$spec" ] || arch=all
  mkdir -p "$debdir"
  for f in "$debdir/${name}"_*_"$arch".deb; do [ -f "$f" ] && { echo "$f"; return 0; }; done
  apt_index
  log "downloading $spec"
  (cd "$debdir" && apt-get "${apt_opts[@]}" download "$spec" >>"$aptdir/download.log" 2>&1) ||
    { tail -5 "$aptdir/download.log" >&2; die "apt-get download $spec failed"; }
  for f in "$debdir/${name}"_*_"$arch".deb; do [ -f "$f" ] && { echo "$f"; return 0; }; done
  die "apt-get download $spec left no .deb"
}

# The kernel ABI (6.1.0-NN) comes from the linux-image-<arch> metapackage and is
# then pinned in the cache, so runs are reproducible until HWLAB_REFRESH=1.
kernel_abi() {
  local f=$cache/kernel-abi
  if [ ! -s "$f" ] || [ "${HWLAB_REFRESH:-0}" = 1 ]; then
    apt_index
    apt-cache "${apt_opts[@]}" depends linux-image-amd64:amd64 |
      sed -n 's/.*Depends: linux-image-\([0-9.]*-[0-9]*\)-amd64.*/\1/p' | head -1 >"$f.tmp"
    [ -s "$f.tmp" ] || die "cannot read the kernel ABI from linux-image-amd64"
    mv "$f.tmp" "$f"
  fi
  cat "$f"
}

# ---------------------------------------------------------- kernel + gpio-sim
# The three source files gpio-sim needs, from the linux-source package. One
# call in the simulator needs irq_to_desc(), which modules cannot call.
kernel_sources() {
  local d=$cache/src ver=$1
  [ -f "$d/$ver.ok" ] && return 0
  local debf
  debf=$(deb linux-source-6.1)
  log "extracting gpio-sim sources from $(basename "$debf")"
  rm -rf "$d" && mkdir -p "$d"
  # --occurrence stops reading the 140 MB tarball once the files are found;
  # the pipeline's earlier stages then die of SIGPIPE, so check the result.
  set +o pipefail
  dpkg-deb --fsys-tarfile "$debf" 2>/dev/null | tar -xO ./usr/src/linux-source-6.1.tar.xz | xz -dc 2>/dev/null |
    tar -x -C "$d" --occurrence --strip-components=1 \
      linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h \
      linux-source-6.1/kernel/irq/irq_sim.c
  set -o pipefail
  for f in drivers/gpio/gpio-sim.c drivers/gpio/gpiolib.h kernel/irq/irq_sim.c; do
    [ -s "$d/$f" ] || die "linux-source: $f not extracted"
  done
  touch "$d/$ver.ok"
}

# kernel ARCH: fetches the image, headers and kbuild, builds gpio-sim.ko and
# leaves kernel/<arch>/{boot,configfs.ko,gpio-sim.ko,release}.
kernel() {
  local arch=$1 abi kd x rel hdr b
  abi=$(kernel_abi)
  rel=$abi-$arch
  kd=$cache/kernel/$arch
  [ -f "$kd/ok" ] && [ "$(cat "$kd/release")" = "$rel" ] && return 0
  rm -rf "$kd" && mkdir -p "$kd"
  x=$kd/root
  local pkgs=("linux-image-$rel:$arch" "linux-headers-$rel:$arch" "linux-headers-$abi-common" "linux-kbuild-6.1:amd64")
  for p in "${pkgs[@]}"; do dpkg-deb -x "$(deb "$p")" "$x"; done
  local ver
  ver=$(dpkg-deb -f "$(deb "linux-image-$rel:$arch")" Version)
  kernel_sources "$ver"
  if [ "$arch" = amd64 ]; then
    # QEMU boots the uncompressed ELF vmlinux through its PVH entry about twice
    # as fast as the bzImage: unpack it from the bzImage's xz payload.
    local off
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$x/boot/vmlinuz-$rel" | head -1 | cut -d: -f1)
    [ -n "$off" ] || die "no xz payload in vmlinuz-$rel"
    tail -c +"$((off + 1))" "$x/boot/vmlinuz-$rel" | xz -dc >"$kd/boot" 2>/dev/null || true
    [ "$(head -c 4 "$kd/boot" | od -An -c | tr -d ' ')" = '177ELF' ] || die "vmlinux-$rel: unpacking failed"
  else
    cp "$x/boot/vmlinuz-$rel" "$kd/boot"
  fi
  cp "$x/lib/modules/$rel/kernel/fs/configfs/configfs.ko" "$kd/"
  # The headers' Makefile includes the common headers by absolute path.
  hdr=$x/usr/src/linux-headers-$rel
  echo "include $x/usr/src/linux-headers-$abi-common/Makefile" >"$hdr/Makefile"
  b=$kd/gpio-sim
  mkdir -p "$b"
  cp "$cache/src/drivers/gpio/gpio-sim.c" "$b/sim.c"
  cp "$cache/src/drivers/gpio/gpiolib.h" "$b/"
  sed 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' \
    "$cache/src/kernel/irq/irq_sim.c" >"$b/irq_sim.c"
  grep -q 'generic_handle_irq(irqnum);' "$b/irq_sim.c" || die "irq_sim.c: the irq_to_desc() call to patch is gone"
  printf 'obj-m := gpio-sim.o\ngpio-sim-y := sim.o irq_sim.o\n' >"$b/Kbuild"
  local cross=()
  [ "$arch" = arm64 ] && cross=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
  log "building gpio-sim.ko for $rel"
  make -s -C "$hdr" M="$b" "${cross[@]}" modules >"$kd/build.log" 2>&1 || { cat "$kd/build.log" >&2; die "gpio-sim build for $rel failed"; }
  cp "$b/gpio-sim.ko" "$kd/"
  echo "$rel" >"$kd/release"
  echo "$ver" >"$kd/version"
  rm -rf "$x"
  touch "$kd/ok"
}

busybox() {
  local arch=$1
  local d=$cache/busybox/$arch
  [ -x "$d/busybox" ] && return 0
  rm -rf "$d" && mkdir -p "$d/x"
  dpkg-deb -x "$(deb "busybox-static:$arch")" "$d/x"
  mv "$d/x/bin/busybox" "$d/busybox" && rm -rf "$d/x"
}

# ------------------------------------------------------------------ initramfs
initramfs() {
  local arch=$1 out=$2 r
  r=$(mktemp -d "$cache/rootfs.XXXXXX")
  mkdir -p "$r/bin" "$r/sbin" "$r/usr/bin" "$r/lib/modules" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/run" "$r/out" "$r/hwlab"
  cp "$cache/busybox/$arch/busybox" "$r/bin/busybox"
  cp "$here/init" "$r/init"
  chmod 755 "$r/init"
  cp "$cache/kernel/$arch/configfs.ko" "$cache/kernel/$arch/gpio-sim.ko" "$r/lib/modules/"
  cp "$dist/pspf-edge-linux-$arch" "$r/usr/bin/pspf-edge"
  cp -r "$here/pipelines" "$r/hwlab/"
  (cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$out"
  rm -rf "$r"
}

# ---------------------------------------------------------------------- boot
qemu_pids=() # QEMU and the FIFO helpers: killed by PID on any exit
cleanup() {
  local p
  for p in "${qemu_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# boot ARCH SCENARIO DIR: boots one VM, waits for it to power off (or kills it
# after vm_timeout), extracts the guest's /out into DIR/out. Sets boot_s.
boot_s=0
boot() {
  local arch=$1 scen=$2 d=$3
  local kd=$cache/kernel/$arch
  # cryptomgr.notests=1: no crypto self-tests at boot. Under emulation on a
  # loaded host they once held the amd64 guest's CPU for over 100 s (soft
  # lockups in cryptomgr_test) and the smoke VM timed out before /init.
  local cmdline="quiet loglevel=3 panic=-1 cryptomgr.notests=1 HWLAB_SCENARIO=$scen HWLAB_ARCH=$arch"
  local q=()
  mkdir -p "$d"
  local data=(-chardev "null,id=data")
  if [ "$scen" = serial ]; then
    rm -f "$d/data.in" "$d/data.out" && mkfifo "$d/data.in" "$d/data.out"
    data=(-chardev "pipe,id=data,path=$d/data")
    cmdline+=" HWLAB_SERIAL_RECORDS=$(wc -l <"$rundir/serial-expected.txt")"
  fi
  case "$arch" in
    arm64)
      # shellcheck disable=SC2054 # commas are QEMU's option syntax
      q=(qemu-system-aarch64 -M virt -cpu cortex-a53
        -kernel "$kd/boot" -append "console=ttyAMA0 $cmdline HWLAB_TTY=/dev/ttyS0 HWLAB_OUT=/dev/ttyS1"
        -serial chardev:con
        "${data[@]}" -device pci-serial,chardev=data,addr=0x5
        -chardev "file,id=out,path=$d/out.tar" -device pci-serial,chardev=out,addr=0x6) ;;
    amd64)
      q=(qemu-system-x86_64 -M pc
        -kernel "$kd/boot" -append "console=ttyS0 $cmdline HWLAB_TTY=/dev/ttyS1 HWLAB_OUT=/dev/ttyS2"
        -serial chardev:con
        "${data[@]}" -serial chardev:data
        -chardev "file,id=out,path=$d/out.tar" -serial chardev:out) ;;
  esac
  q+=(-accel tcg -m 256 -smp 2 -nodefaults -no-user-config -display none -no-reboot
    -initrd "$rundir/initramfs-$arch.cpio" -chardev "file,id=con,path=$d/console.log")

  local t0 writer=""
  t0=$(now)
  : >"$d/console.log"
  if [ "$scen" = serial ]; then
    # Hold both FIFO ends open (QEMU opens them blocking), drain what the
    # guest sends, and write the frames once the guest says the agent has
    # opened its tty (bytes sent before that can be lost).
    exec 7<>"$d/data.in" 8<>"$d/data.out"
    # Each background job ends in exec, so that its PID is the process that
    # holds the FIFO and killing it leaves nothing behind.
    (
      exec 8>&-
      until grep -q 'HWLAB-SERIAL-READY' "$d/console.log" 2>/dev/null; do sleep 0.05; done
      exec cat "$rundir/serial-input.bin" >&7
    ) &
    writer=$!
    (exec 7>&- && exec cat <&8 >/dev/null) &
    local drain=$!
    qemu_pids+=("$writer" "$drain")
  fi
  "${q[@]}" </dev/null >"$d/qemu.log" 2>&1 7>&- 8>&- &
  local qpid=$!
  qemu_pids+=("$qpid")
  boot_s=""
  local deadline
  deadline=$(awk -v a="$t0" -v t="$vm_timeout" 'BEGIN { printf "%d", a + t }')
  while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$boot_s" ] && grep -q 'hwlab: init' "$d/console.log" 2>/dev/null; then boot_s=$(elapsed "$t0"); fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$arch/$scen: timeout after ${vm_timeout}s, killing QEMU (pid $qpid)"
      echo "HWLAB-TIMEOUT" >>"$d/console.log"
      kill -TERM "$qpid" 2>/dev/null || true
      sleep 1
      kill -KILL "$qpid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
  wait "$qpid" 2>/dev/null || true
  [ -n "$boot_s" ] || boot_s=$(grep -q 'hwlab: init' "$d/console.log" && elapsed "$t0" || echo -)
  if [ -n "$writer" ]; then
    kill "$writer" "$drain" 2>/dev/null || true
    wait "$writer" "$drain" 2>/dev/null || true
    exec 7>&- 8>&-
  fi
  rm -rf "$d/out" && mkdir -p "$d/out"
  tar -xf "$d/out.tar" -C "$d/out" 2>/dev/null || true
}

# -------------------------------------------------------------------- checks
# Each check_<scenario> DIR prints "pass|fail RECORDS DETAIL" from DIR/out.
# shellcheck source=checks.sh
. "$here/checks.sh"

# ---------------------------------------------------------------------- main
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${all_scenarios[@]}")
for s in "${scenarios[@]}"; do
  case " ${all_scenarios[*]} " in *" $s "*) ;; *) die "unknown scenario $s (${all_scenarios[*]})" ;; esac
done

install_host_tools
for a in $arches; do
  case "$a" in arm64|amd64) ;; *) die "unknown architecture $a (arm64 amd64)" ;; esac
  kernel "$a"
  busybox "$a"
done
t_prep=$(elapsed "$t_start")

dist=${HWLAB_DIST:-$cache/bin}
if [ -z "${HWLAB_DIST:-}" ]; then
  log "cross-building pspf-edge for $arches"
  # shellcheck disable=SC2086 # arches is a word list
  (cd "$repo" && DIST="$dist" scripts/cross-build.sh $arches) >"$cache/cross-build.log" 2>&1 ||
    { cat "$cache/cross-build.log" >&2; die "scripts/cross-build.sh failed"; }
fi

rundir=$cache/run
rm -rf "$rundir" && mkdir -p "$rundir"
gen_serial_input "$rundir"
for a in $arches; do initramfs "$a" "$rundir/initramfs-$a.cpio"; done
t_build=$(elapsed "$t_start")

# run_arch ARCH: every scenario on one architecture, one VM each, in turn.
# Rows go to $rundir/rows-ARCH, failure details to $rundir/failures-ARCH.
run_arch() {
  local a=$1 s d t0 verdict status records detail
  for s in "${scenarios[@]}"; do
    d=$rundir/$a-$s
    t0=$(now)
    boot "$a" "$s" "$d"
    verdict=$("check_${s//-/_}" "$d" "$a" || true)
    [ -n "$verdict" ] || verdict="fail 0 no verdict"
    read -r status records detail <<<"$verdict"
    if [ "$status" != pass ]; then
      {
        echo "hwlab: $a/$s failed: $detail (console: $d/console.log, guest output: $d/out)"
        tail -n 30 "$d/console.log" || true
        [ -f "$d/out/agent.log" ] && tail -n 20 "$d/out/agent.log"
      } >>"$rundir/failures-$a" 2>&1
    fi
    printf '%-6s %-13s %-5s %8s %7s %7s  %s\n' "$a" "$s" "$status" "$records" "$boot_s" "$(elapsed "$t0")" "$detail" >>"$rundir/rows-$a"
  done
}

# The architectures run side by side (HWLAB_JOBS=1: one after the other):
# the guests mostly wait on the scenarios' clocks, so two fit on two cores.
# Each runner kills its own VMs on exit; this shell ends the runners.
runners=()
stop_runners() {
  local p
  for p in "${runners[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  cleanup
}
trap stop_runners EXIT
for a in $arches; do
  (trap cleanup EXIT; run_arch "$a") &
  runners+=("$!")
  [ "${HWLAB_JOBS:-2}" -gt 1 ] || wait "${runners[-1]}"
done
wait "${runners[@]}" || true
runners=()
cat "$rundir"/failures-* >&2 2>/dev/null || true
results=()
for a in $arches; do mapfile -t -O "${#results[@]}" results <"$rundir/rows-$a"; done
failed=$(printf '%s\n' "${results[@]}" | awk '$3 != "pass"' | wc -l)
[ "${#results[@]}" -eq $((${#scenarios[@]} * $(wc -w <<<"$arches"))) ] || failed=$((failed + 1))

kver=""
for a in $arches; do kver+=" $(cat "$cache/kernel/$a/release") ($(cat "$cache/kernel/$a/version"))"; done
printf '\nhwlab: kernels:%s; QEMU %s\n' "$kver" "$(qemu-system-x86_64 --version | sed -n '1s/.*version \([^ ]*\).*/\1/p')"
printf '%-6s %-13s %-5s %8s %7s %7s  %s\n' arch scenario result records boot_s total_s detail
printf '%s\n' "${results[@]}"
printf 'hwlab: %d scenario runs, %d failed; prepare %ss, build %ss, total %ss (cache: %s)\n' \
  "${#results[@]}" "$failed" "$t_prep" "$t_build" "$(elapsed "$t_start")" "$cache"
[ "$failed" -eq 0 ]
