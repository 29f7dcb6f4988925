# shellcheck shell=sh
# The upper layer: a RAM file system at CAIRN_UPPER_MOUNT holding the
# overlay's upperdir and workdir. zram (compressed, ext4 on top) or tmpfs;
# when zram cannot be set up the boot says so and uses tmpfs.

# upper_size_bytes SPEC: the upper layer's size in bytes for cairn.upper_size
# SPEC (its form already checked). A size below CAIRN_UPPER_SIZE_MIN, or a
# percentage when the RAM size is unknown, gives way to the default.
upper_size_bytes() {
  _us_mem=$(mem_total_bytes) || warn "cannot read the RAM size from /proc/meminfo"
  _us_bytes=$(size_bytes "$1" "$_us_mem")
  if [ "${_us_bytes:-0}" -ge "$CAIRN_UPPER_SIZE_MIN" ]; then
    echo "$_us_bytes"
    return 0
  fi
  _us_bytes=$(size_bytes "$CAIRN_UPPER_SIZE_DEFAULT" "$_us_mem")
  [ "${_us_bytes:-0}" -ge "$CAIRN_UPPER_SIZE_MIN" ] ||
    _us_bytes=$CAIRN_UPPER_SIZE_MIN
  warn "an upper layer of $1 is too small or cannot be computed" \
    "(minimum $(mib "$CAIRN_UPPER_SIZE_MIN") MiB); using $(mib "$_us_bytes") MiB"
  echo "$_us_bytes"
}

# upper_create KIND BYTES: mount the upper layer (KIND zram or tmpfs) and
# make its upperdir and workdir; cairn_upper_used says what it is on.
upper_create() {
  mkdir -p "$ROOT$CAIRN_UPPER_MOUNT" || return 1
  cairn_upper_used=tmpfs
  if [ "$1" = zram ]; then
    if upper_zram "$2" "$ROOT$CAIRN_UPPER_MOUNT"; then
      cairn_upper_used=zram
    else
      warn "zram is not available; the upper layer is on tmpfs instead"
    fi
  fi
  if [ "$cairn_upper_used" = tmpfs ] &&
    ! mount -t tmpfs -o "size=$2,mode=0755" cairn-upper "$ROOT$CAIRN_UPPER_MOUNT"; then
    err "cannot mount a tmpfs of $(mib "$2") MiB for the upper layer"
    return 1
  fi
  info "upper layer: $cairn_upper_used, $(mib "$2") MiB"
  upper_dirs
}

# upper_dirs: the overlay's upperdir and workdir, empty.
upper_dirs() {
  mkdir -p "$ROOT$CAIRN_UPPER_DIR" "$ROOT$CAIRN_WORK_DIR"
}

# upper_reset: throw away whatever a failed unpack left in the upper layer.
upper_reset() {
  rm -rf "$ROOT$CAIRN_UPPER_DIR" "$ROOT$CAIRN_WORK_DIR" && upper_dirs
}

# upper_zram BYTES DIR: a zram device of BYTES with ext4 on it, mounted on
# DIR. On failure the device is reset, which gives its memory back.
upper_zram() {
  _uz_n=$(zram_device) || {
    warn "no zram device (no zram support in the kernel?)"
    return 1
  }
  _uz_sys=$ROOT/sys/block/zram$_uz_n
  _uz_dev=/dev/zram$_uz_n
  zram_algorithm "$_uz_sys"
  if echo "$1" >"$_uz_sys/disksize" && dev_wait "$_uz_dev" &&
    upper_mkfs "$_uz_dev" &&
    mount -t ext4 -o noatime,discard "$ROOT$_uz_dev" "$2"; then
    debug "zram$_uz_n: $(cat "$_uz_sys/comp_algorithm" 2>/dev/null)"
    return 0
  fi
  warn "cannot set up zram$_uz_n as the upper layer"
  echo 1 >"$_uz_sys/reset" 2>/dev/null
  return 1
}

# zram_device: print the number of a free zram device: zram0 when it is
# unused (as after modprobe zram), else a new one.
zram_device() {
  _zd_sys=$ROOT/sys
  [ -e "$_zd_sys/class/zram-control" ] || [ -e "$_zd_sys/block/zram0" ] ||
    "$CAIRN_MODPROBE" -q zram 2>/dev/null
  if [ "$(cat "$_zd_sys/block/zram0/disksize" 2>/dev/null)" = 0 ]; then
    echo 0
  elif [ -r "$_zd_sys/class/zram-control/hot_add" ]; then
    cat "$_zd_sys/class/zram-control/hot_add"
  else
    return 1
  fi
}

# zram_algorithm SYSDIR: the first of CAIRN_ZRAM_ALGOS the kernel offers.
zram_algorithm() {
  _za_have=" $(tr -d '[]' <"$1/comp_algorithm" 2>/dev/null) "
  for _za_algo in $CAIRN_ZRAM_ALGOS; do
    case $_za_have in
      *" $_za_algo "*)
        echo "$_za_algo" >"$1/comp_algorithm" 2>/dev/null && return 0
        ;;
    esac
  done
  return 0
}

# dev_wait DEV: wait up to two seconds for devtmpfs to show DEV.
dev_wait() {
  for _dw_i in 1 2 3 4 5 6 7 8 9 10; do
    [ -b "$ROOT$1" ] && return 0
    sleep 0.2 2>/dev/null || sleep 1
  done
  [ -b "$ROOT$1" ]
}

# upper_mkfs DEV: ext4 without a journal (RAM needs none) and no reserved
# blocks, made by e2fsprogs' mkfs.ext4, which the initramfs carries (not
# every busybox has mke2fs, and its ext2 cannot hold big xattrs).
# 4 KiB blocks: zram's sectors are 4 KiB, and the kernel refuses to mount
# smaller blocks on it. ea_inode: an xattr value up to 64 KiB, as tmpfs
# takes; without it ext4 refuses any above a block, and a state saved from
# a tmpfs session would not unpack.
upper_mkfs() {
  mkfs.ext4 -q -F -b 4096 -m 0 -i 8192 -O ^has_journal,ea_inode -L cairn-upper "$ROOT$1"
}
