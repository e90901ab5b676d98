# shellcheck shell=bash
# Sourced by hwlab.sh. Each check_<scenario> DIR ARCH reads what the guest left
# in DIR/out and prints one line: "pass|fail RECORDS DETAIL". The host, not the
# guest, decides: the guest only records facts.

# json_field NAME: awk program fragment printing field NAME of each NDJSON line.
# Good enough for the flat records the agent writes (no nested objects).
json_field() {
  awk -v k="\"$1\":" '{
    i = index($0, k); if (i == 0) { print ""; next }
    s = substr($0, i + length(k))
    if (substr(s, 1, 1) == "\"") { s = substr(s, 2); print substr(s, 1, index(s, "\"") - 1) }
    else { match(s, /^[^,}]*/); print substr(s, 1, RLENGTH) }
  }'
}

# common_failures DIR: prints the guest's failures, if any, and fails.
common_failures() {
  local o=$1/out
  if [ ! -f "$o/uptime.txt" ]; then
    grep -q HWLAB-TIMEOUT "$1/console.log" 2>/dev/null && { echo "VM timed out"; return 1; }
    echo "guest sent no output (see console.log)"
    return 1
  fi
  if [ -s "$o/failures.txt" ]; then
    paste -sd';' "$o/failures.txt"
    return 1
  fi
  return 0
}

# lines FILE: number of lines, 0 if missing.
lines() { if [ -f "$1" ]; then wc -l <"$1" | tr -d ' '; else echo 0; fi; }

check_smoke() {
  local d=$1 arch=$2 o=$1/out why n
  why=$(common_failures "$d") || { echo "fail $(lines "$o/smoke.ndjson") $why"; return; }
  n=$(lines "$o/smoke.ndjson")
  grep -q "linux/$arch" "$o/version.txt" || { echo "fail $n version does not say linux/$arch: $(head -1 "$o/version.txt")"; return; }
  [ "$(cat "$o/validate.rc")" = 0 ] || { echo "fail $n validate: $(grep -v ': ok$' "$o/validate.txt" | head -2 | paste -sd' ')"; return; }
  grep -q hwlab-sim "$o/gpiochips.txt" || { echo "fail $n no gpio-sim chip"; return; }
  grep -q 16550 "$o/serial.txt" || { echo "fail $n no 16550 UART"; return; }
  [ "$(cat "$o/agent-exit.txt")" = 0 ] || { echo "fail $n agent exit $(cat "$o/agent-exit.txt")"; return; }
  echo "pass $n version ok, the lab's $(grep -c ': ok$' "$o/validate.txt") pipelines valid, gpio-sim and 16550 present, clean SIGTERM exit"
}

check_kill_restart() {
  local d=$1 o=$1/out why n k before bad
  why=$(common_failures "$d") || { echo "fail $(lines "$o/dump.ndjson") $why"; return; }
  n=$(lines "$o/dump.ndjson")
  k=$(lines "$o/dump-after-kill.ndjson")
  before=$(lines "$o/before.ndjson")
  [ "$(tail -1 "$o/verify-after-kill.txt")" = 0 ] || { echo "fail $n buffer verify after SIGKILL: $(head -1 "$o/verify-after-kill.txt")"; return; }
  [ "$(tail -1 "$o/verify.txt")" = 0 ] || { echo "fail $n buffer verify after restart: $(head -1 "$o/verify.txt")"; return; }
  # Right after the kill the log holds 1..k without a gap, and every record
  # the sink had before the kill is in it, unchanged.
  bad=$(json_field _seq <"$o/dump-after-kill.ndjson" | awk '$1 != NR { print NR ": " $1; exit }')
  [ -z "$bad" ] || { echo "fail $n log sequence gap after the kill at $bad"; return; }
  bad=$(paste -d' ' <(json_field _seq <"$o/dump-after-kill.ndjson") <(json_field _time <"$o/dump-after-kill.ndjson") |
    awk 'NR == FNR { t[$1] = $2; next } {
      split($1, a, ":"); s = a[length(a)]
      if (!(s in t)) { print "record " $1 " missing"; exit }
      if (t[s] != $2) { print "record " $1 " changed"; exit }
    }' - <(paste -d' ' <(json_field _id <"$o/before.ndjson") <(json_field _time <"$o/before.ndjson")))
  [ -z "$bad" ] || { echo "fail $n $bad"; return; }
  # After the restart the sequences rise; the kill may leave one jump (the
  # unused rest of the sequence reservation, never reissued: see
  # buffer/FORMAT.md), and no other gap. Segments every reader had passed
  # may be gone, so the dump need not start at 1.
  bad=$(json_field _seq <"$o/dump.ndjson" | awk 'NR > 1 && $1 <= p { print "sequence " $1 " after " p; exit }
    NR > 1 && $1 != p + 1 { if (++gaps > 1) { print "second gap at " $1; exit } }
    { p = $1 }')
  [ -z "$bad" ] || { echo "fail $n log sequences after the restart: $bad"; return; }
  [ "$n" -gt 0 ] && [ "$(json_field _seq <"$o/dump.ndjson" | tail -1)" -gt "$k" ] || { echo "fail $n log did not grow after the restart ($k records after the kill)"; return; }
  # After the restart and a clean stop, the sink has delivered every logged
  # record at least once (a redelivery after the kill is allowed: stable
  # IDs), nothing else, and no ID names two different records.
  local got dups want
  got=$(json_field _id <"$o/after.ndjson" | sort -u | wc -l)
  dups=$(($(lines "$o/after.ndjson") - got))
  want=$(cat <(json_field _seq <"$o/dump-after-kill.ndjson") <(json_field _seq <"$o/dump.ndjson") | sort -u | wc -l)
  [ "$got" -eq "$want" ] || { echo "fail $n the file sink delivered $got distinct records of $want logged"; return; }
  bad=$(paste -d' ' <(cat "$o/after.ndjson" | json_field _id) <(cat "$o/after.ndjson" | json_field _time) |
    awk '($1 in t) && t[$1] != $2 { print "ID " $1 " on two records"; exit } { t[$1] = $2 }')
  [ -z "$bad" ] || { echo "fail $n $bad"; return; }
  bad=$(paste -d' ' <(json_field _seq <"$o/dump.ndjson") <(json_field _time <"$o/dump.ndjson") |
    awk 'NR == FNR { t[$1] = $2; next } {
      split($1, a, ":"); s = a[length(a)]
      if ((s in t) && t[s] != $2) { print "record " $1 " delivered with another payload than logged"; exit }
      if (s in t) seen[s] = 1
    } END { for (s in t) if (!(s in seen)) { print "logged record " s " not delivered"; exit } }' - <(paste -d' ' <(json_field _id <"$o/after.ndjson") <(json_field _time <"$o/after.ndjson")))
  [ -z "$bad" ] || { echo "fail $n $bad"; return; }
  echo "pass $want $before delivered before SIGKILL all in the log ($k right after the kill, 1..$k intact); sequences after the restart rise with at most the reservation's jump; verify clean; all $want delivered ($dups redelivered), no ID reused"
}

# gen_serial_input DIR: writes DIR/serial-input.bin (the bytes the host sends
# into the guest's tty), DIR/serial-expected.txt (the "_raw..." member of each
# record that must come out, in order) and DIR/serial-drops (oversize frames).
# Lines end in \n or \r\n (trim_cr); garbage is a frame of invalid UTF-8 (it
# comes out base64-encoded); oversize frames exceed max_frame (64 B).
gen_serial_input() {
  local d=$1 i line drops=0 long
  long=$(printf '%0200d' 0 | tr 0 X)
  {
    for i in $(seq 1 300); do
      line="T$((i % 4)),seq=$i,temp=$((200 + i * 37 % 100))e-1,rh=$((i * 13 % 60 + 20))"
      if [ $((i % 5)) = 0 ]; then printf '%s\r\n' "$line"; else printf '%s\n' "$line"; fi
      echo "\"_raw\":\"$line\"" >&3
      if [ $((i % 25)) = 0 ]; then
        printf '\xff\xfe\x01garbage-%d\x80\n' "$i"
        echo "\"_raw_b64\":\"$(printf '\xff\xfe\x01garbage-%d\x80' "$i" | base64 -w0)\"" >&3
      fi
      if [ $((i % 40)) = 0 ]; then printf '%s\n' "$long"; drops=$((drops + 1)); fi
      if [ $((i % 100)) = 0 ]; then printf '%s%s\n' "$long$long$long$long$long" "$long$long$long$long$long"; drops=$((drops + 1)); fi
    done
  } >"$d/serial-input.bin" 3>"$d/serial-expected.txt"
  echo "$drops" >"$d/serial-drops"
}

check_serial() {
  local d=$1 o=$1/out why n want drops got bad rss hwm
  why=$(common_failures "$d") || { echo "fail $(lines "$o/serial.ndjson") $why"; return; }
  n=$(lines "$o/serial.ndjson")
  want=$(lines "${rundir:?}/serial-expected.txt")
  bad=$(sed 's/.*\("_raw[^}]*\)}$/\1/' "$o/serial.ndjson" | diff "$rundir/serial-expected.txt" - | head -4 | paste -sd' ')
  [ -z "$bad" ] || { echo "fail $n records differ from the $want sent: $bad"; return; }
  drops=$(cat "$rundir/serial-drops")
  got=$(awk '/^pspf_serial_dropped_total/ && /reason="oversize"/ { s += $NF } END { print s + 0 }' "$o/metrics.txt")
  [ "$got" = "$drops" ] || { echo "fail $n oversize drops: got $got, want $drops"; return; }
  rss=$(awk '{ for (i = 1; i < NF; i++) if ($i == "VmRSS:" && $(i + 1) > m) m = $(i + 1) } END { print m + 0 }' "$o/rss-samples.txt")
  hwm=$(awk '{ for (i = 1; i < NF; i++) if ($i == "VmHWM:") m = $(i + 1) } END { print m + 0 }' "$o/rss.txt")
  echo "pass $n all $want records match in order, $got oversize drops counted; agent VmRSS ${rss} kB while streaming, VmHWM ${hwm} kB at stop"
}

check_gpio_edge() {
  local d=$1 o=$1/out why n got want drops cycles=3
  why=$(common_failures "$d") || { echo "fail $(lines "$o/gpio-edge.ndjson") $why"; return; }
  n=$(lines "$o/gpio-edge.ndjson")
  got=$(paste -d/ <(json_field value <"$o/gpio-edge.ndjson") <(json_field edge <"$o/gpio-edge.ndjson") | paste -sd' ')
  want=$(for _ in $(seq "$cycles"); do printf '1/rising 0/falling '; done)
  [ "$got" = "${want% }" ] || { echo "fail $n records $got, want ${want% } (bursts: $(paste -sd, "$o/bursts.txt"))"; return; }
  drops=$(awk '/^pspf_gpio_dropped_total/ && /reason="debounced"/ { s += $NF } END { print s + 0 }' "$o/metrics.txt")
  # Each glitch is one drop. A chatter burst that the host stalls for longer
  # than the debounce halfway is, to the agent, a glitch too: more drops are
  # allowed, fewer are not.
  [ "$drops" -ge $((cycles * 2)) ] || { echo "fail $n debounced drops: got $drops, want $((cycles * 2)) (one per glitch)"; return; }
  echo "pass $n $((cycles * 2)) chattering changes gave one record each; $((cycles * 2)) glitches gave none, $drops debounced drops counted (bursts $(awk '{ print $(NF-1) }' "$o/bursts.txt" | sort -n | tail -1) ms max)"
}

check_gpio_counter() {
  local d=$1 o=$1/out why n counts want bad spread
  why=$(common_failures "$d") || { echo "fail $(lines "$o/gpio-counter.ndjson") $why"; return; }
  n=$(lines "$o/gpio-counter.ndjson")
  counts=$(json_field count <"$o/gpio-counter.ndjson" | paste -sd' ')
  want=$(awk '{ printf "%s%s", sep, $1; sep = "," }' "$o/bursts.txt")
  # Each burst's pulses are in its records FIRST..LAST, exactly; every other
  # record counts 0.
  bad=$(json_field count <"$o/gpio-counter.ndjson" | awk -v bursts="$o/bursts.txt" '
    BEGIN { while ((getline l < bursts) > 0) { split(l, f, " "); nb++; k[nb] = f[1]; lo[nb] = f[2]; hi[nb] = f[3] } }
    { c[NR] = $1 }
    END {
      for (r = 1; r <= NR; r++) owner[r] = 0
      for (b = 1; b <= nb; b++) { s = 0; for (r = lo[b]; r <= hi[b]; r++) { s += c[r]; owner[r] = b }
        if (s != k[b]) printf "burst %d: %d pulses counted in records %d..%d, want %d; ", b, s, lo[b], hi[b], k[b] }
      for (r = 1; r <= NR; r++) if (!owner[r] && c[r] != 0) printf "record %d: count %d outside any burst; ", r, c[r]
    }')
  [ -z "$bad" ] || { echo "fail $n ${bad}counts $counts (bursts $want)"; return; }
  bad=$(paste -d' ' <(json_field count <"$o/gpio-counter.ndjson") <(json_field per_second <"$o/gpio-counter.ndjson") <(json_field interval_ms <"$o/gpio-counter.ndjson") |
    awk '{ if ($3 < 500 || $3 > 3000) { print "interval_ms " $3; exit } if (($1 * 1000 / $3 - $2) ^ 2 > 0.01) { print "per_second " $2 " for " $1 "/" $3 "ms"; exit } }')
  [ -z "$bad" ] || { echo "fail $n $bad"; return; }
  # A burst whose pulses landed in more than one interval: the host stalled it.
  spread=$(json_field count <"$o/gpio-counter.ndjson" | awk -v bursts="$o/bursts.txt" '
    { c[NR] = $1 }
    END { while ((getline l < bursts) > 0) { split(l, f, " "); m = 0
            for (r = f[2]; r <= f[3]; r++) if (c[r] > 0) m++
            if (m > 1) n++ }
          print n + 0 }')
  echo "pass $n bursts of $want pulses counted exactly (counts $counts); $spread burst(s) spread over 2+ intervals by a slow host"
}

check_gpio_level() {
  local d=$1 o=$1/out why n runs l
  why=$(common_failures "$d") || { echo "fail $(lines "$o/gpio-level.ndjson") $why"; return; }
  n=$(lines "$o/gpio-level.ndjson")
  # The float switch's readings, runs collapsed: low, high, low.
  runs=$(grep '"float_switch"' "$o/gpio-level.ndjson" | json_field value | uniq -c | awk '{ printf "%s%sx%s", sep, $2, $1; sep = " " }')
  [[ "$runs" =~ ^0x[0-9]+\ 1x([3-9]|[1-9][0-9])\ 0x[0-9]+$ ]] || { echo "fail $n level readings $runs, want 0 then 1 (3+ readings) then 0"; return; }
  for l in spare meter; do
    grep -Eq "\($l +\|pspf-edge[^ )]* *\) in " "$o/debugfs-running.txt" || { echo "fail $n line $l not held as an input while running: $(grep "($l" "$o/debugfs-running.txt")"; return; }
    grep -Eq "\($l +\|" "$o/debugfs-stopped.txt" && { echo "fail $n line $l still held after SIGTERM"; return; }
  done
  for l in door alarm; do
    grep -Eq "\($l +\|" "$o/debugfs-running.txt" && { echo "fail $n line $l held though not configured"; return; }
  done
  echo "pass $n level readings $runs follow the switch; spare+meter held as inputs, door+alarm untouched, all released on stop"
}
