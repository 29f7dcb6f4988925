# shellcheck shell=sh
# When nothing can boot: the reason on the console, then with cairn.debug=1
# a rescue shell, without it a power-off after CAIRN_FATAL_WAIT seconds.
# Either way the machine does not hang silently.

# fatal REASON...: stop the boot.
fatal() {
  err "cannot boot: $*"
  if [ "${cairn_debug:-0}" = 1 ]; then
    rescue_shell
  else
    err "boot with cairn.debug=1 for a rescue shell"
    config_number CAIRN_FATAL_WAIT 120
    info "powering off in ${CAIRN_FATAL_WAIT}s"
    sleep "$CAIRN_FATAL_WAIT"
  fi
  power_off
}

# rescue_shell: an interactive shell on the console. The kernel gives PID 1
# the console without making it a controlling terminal; the shell gets it as
# one (setsid -c: a new session, the console on stdin as its terminal), so
# that Ctrl-C and job control work. Not as PID 1 (a test) it would take the
# caller's terminal away, so there the shell just runs.
rescue_shell() {
  info "starting a rescue shell; exit it to power off"
  if [ "$$" = 1 ]; then
    setsid -c "$CAIRN_SHELL"
  else
    "$CAIRN_SHELL"
  fi
}

# power_off: power off; should that fail, leaving PID 1 makes the kernel
# panic, below the messages above.
power_off() {
  sync
  "$CAIRN_POWEROFF" -f
  exit 1
}
