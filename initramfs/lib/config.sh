# shellcheck shell=sh
# Tunables of the early boot. Each may be set in the environment first: the
# tests do, and so does a VAR=value on the kernel command line, which the
# kernel hands to init as its environment (CAIRN_FIND_TIMEOUT=30 for a very
# slow stick). Paths are relative to "$ROOT", which is empty at boot.
# CAIRN_KVER, unset at boot, stands in for `uname -r` (kernel_version).

# Seconds to wait for the data partition: USB sticks can take a while.
: "${CAIRN_FIND_TIMEOUT:=10}"
# Seconds e2fsck -p may take on the data partition before the boot goes on
# without writing to it (a full check of a large, slow stick takes minutes).
: "${CAIRN_FSCK_TIMEOUT:=600}"
# Passphrase tries for an encrypted data partition.
: "${CAIRN_LUKS_TRIES:=3}"
# The device-mapper name of the unlocked data partition.
: "${CAIRN_LUKS_NAME:=cairn-data}"
# Where the new root is assembled before switch_root.
: "${CAIRN_NEWROOT:=/sysroot}"
# The kernel command line, and the kernel log (tests use plain files).
: "${CAIRN_CMDLINE:=/proc/cmdline}"
: "${CAIRN_KMSG:=/dev/kmsg}"
# The upper layer's size when cairn.upper_size does not say: a share of RAM.
: "${CAIRN_UPPER_SIZE_DEFAULT:=50%}"
# The smallest upper layer worth booting into, in bytes (16 MiB).
: "${CAIRN_UPPER_SIZE_MIN:=16777216}"
# zram compressors, best first; the first one the kernel offers is used.
: "${CAIRN_ZRAM_ALGOS:=zstd lz4 lzo-rle lzo}"
# Modules the boot may need; one that is missing (or built in) is no error.
: "${CAIRN_MODULES:=loop squashfs overlay ext4 zram dm-crypt usb-storage uas sd_mod}"
# Programs, so that tests can stand in for the ones that act on the machine
# (the power-off is run with -f, the rescue shell without arguments).
: "${CAIRN_MODPROBE:=modprobe}"
: "${CAIRN_SWITCH_ROOT:=switch_root}"
: "${CAIRN_POWEROFF:=poweroff}"
: "${CAIRN_SHELL:=sh}"
# Seconds a fatal error stays on screen before the power-off.
: "${CAIRN_FATAL_WAIT:=120}"

# config_number NAME DEFAULT: NAME's value when it is a whole number;
# otherwise a warning and DEFAULT. These come from the kernel command line,
# where a typo (CAIRN_FIND_TIMEOUT=30s) must not stop the boot.
config_number() {
  _cn_value=
  eval "_cn_value=\${$1-}"
  case $_cn_value in
    '' | *[!0-9]*)
      warn "$1=$_cn_value is not a whole number: using $2"
      eval "$1=\$2"
      ;;
  esac
}
