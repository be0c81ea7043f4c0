# shellcheck shell=bash
# Sourced by the scripts that start daemons and find them again by PID file.
#
# A PID file outlives its daemon (a crash, kill -9, a reboot: /var/tmp and /var/lib survive
# one), and once the kernel's PIDs wrap its number may name any other process. So a PID
# counts as the daemon's only while its command line still holds what the daemon was started
# with; `kill -0` alone would make a script skip a start it needed, or signal a stranger.

# pid_of PIDFILE NEEDLE: print the PID of PIDFILE's first line and succeed when it is a live
# process (not a zombie) whose command line contains NEEDLE.
pid_of() {
  local f=$1 needle=$2 pid
  [ -s "$f" ] || return 1
  pid=$(head -n1 "$f" | tr -dc '0-9')
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle" || return 1
  echo "$pid"
}

# pid_alive PIDFILE NEEDLE: pid_of without the output.
pid_alive() { pid_of "$@" >/dev/null; }
