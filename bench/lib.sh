# Shell helpers shared by the bench scripts (sourced, not run).

# CPU clock ticks (user + system, reaped children included) of a process.
cpu_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }

# Bytes a process has read from and written to storage (direct I/O included).
io_bytes() { awk '/^(read|write)_bytes/{n+=$2} END{printf "%.0f\n", n}' "/proc/$1/io"; }

# Waits until a server process is idle — neither using CPU nor doing disk I/O (a process waiting
# on direct I/O uses no CPU) — so one run's leftover work (handoff takes an upload into the
# spool and checks it after the client has finished) does not slow the next, then flushes dirty
# pages so every run starts with the same writeback state.
settle() {
  local prev cur prev_io cur_io
  prev=$(cpu_ticks "$1"); prev_io=$(io_bytes "$1")
  for _ in $(seq 120); do
    sleep 0.5; cur=$(cpu_ticks "$1"); cur_io=$(io_bytes "$1")
    (( cur - prev <= 1 && cur_io == prev_io )) && break
    prev=$cur; prev_io=$cur_io
  done
  sync
}

# Median of numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Stops the script with the daemon's own words when it did not come up (a config error, say),
# instead of measuring a process that is not there.
alive_or_die() {
  if ! kill -0 "$1" 2>/dev/null; then
    echo "handoff did not start:" >&2
    cat "$2" >&2
    exit 1
  fi
}
