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

# rescue_shell: an interactive shell on the console; as PID 1 it gets the
# console as its controlling terminal, so that Ctrl-C works.
rescue_shell() {
  info "starting a rescue shell; exit it to power off"
  if [ "$$" = 1 ] && command -v setsid >/dev/null 2>&1 &&
    command -v cttyhack >/dev/null 2>&1; then
    setsid cttyhack "$CAIRN_SHELL"
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
