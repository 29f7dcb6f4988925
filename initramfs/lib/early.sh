# shellcheck shell=sh
# The first steps: the kernel's file systems and the drivers the boot needs.

# is_mounted DIR: whether something is mounted on DIR (a path under $ROOT).
is_mounted() {
  awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' \
    "$ROOT/proc/mounts" 2>/dev/null
}

# mount_once TYPE OPTIONS DIR: mount a kernel file system on $ROOT/DIR unless
# one is there already.
mount_once() {
  mkdir -p "$ROOT$3" || return 1
  is_mounted "$ROOT$3" && return 0
  mount -t "$1" -o "$2" "$1" "$ROOT$3" && return 0
  err "cannot mount $1 on $3"
  return 1
}

# mount_pseudo: /proc, /sys, /dev and /run.
mount_pseudo() {
  mount_once proc nosuid,nodev,noexec /proc &&
    mount_once sysfs nosuid,nodev,noexec /sys &&
    mount_once devtmpfs nosuid,mode=0755 /dev &&
    mount_once tmpfs nosuid,nodev,mode=0755 /run
}

# load_modules: the drivers of CAIRN_MODULES, then those of the hardware
# present. A module that is built in, or missing, is no error here: what is
# really missing shows up as a step that fails, with its own message.
load_modules() {
  for _lm_module in $CAIRN_MODULES; do
    "$CAIRN_MODPROBE" -q "$_lm_module" 2>/dev/null || :
  done
  coldplug
}

# coldplug: load the drivers for the devices the kernel has found so far
# (what udev or mdev would do). Run again while waiting for a slow stick.
coldplug() {
  [ -d "$ROOT/sys/devices" ] || return 0
  find "$ROOT/sys/devices" -name modalias -type f -exec cat {} + 2>/dev/null |
    sort -u | xargs -r "$CAIRN_MODPROBE" -abq 2>/dev/null || :
}

# kernel_version: the running kernel's release (CAIRN_KVER in tests).
kernel_version() {
  if [ -n "${CAIRN_KVER:-}" ]; then
    echo "$CAIRN_KVER"
  else
    uname -r
  fi
}
