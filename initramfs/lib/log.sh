# shellcheck shell=sh
# Messages: every step is said on the console (stderr, which is /dev/console
# in the initramfs) and, when it is writable, in the kernel log.

# say LEVEL PREFIX MESSAGE...: the console line and the kmsg line.
# LEVEL is a syslog level (3 error, 4 warning, 6 info, 7 debug).
say() {
  _say_level=$1 _say_prefix=$2
  shift 2
  printf 'cairn: %s%s\n' "$_say_prefix" "$*" >&2
  if [ -w "$ROOT$CAIRN_KMSG" ]; then
    printf '<%s>cairn: %s%s\n' "$_say_level" "$_say_prefix" "$*" \
      >>"$ROOT$CAIRN_KMSG" 2>/dev/null || :
  fi
}

info() { say 6 '' "$@"; }
warn() { say 4 'warning: ' "$@"; }
err() { say 3 'error: ' "$@"; }

# debug: only with cairn.debug=1.
debug() {
  [ "${cairn_debug:-0}" = 1 ] || return 0
  say 7 'debug: ' "$@"
}
