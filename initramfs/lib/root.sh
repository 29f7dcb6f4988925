# shellcheck shell=sh
# The new root: rootfs.squashfs as the lower layer, the overlay over it, the
# modules and firmware images in it, the mounts the runtime needs moved into
# it, then switch_root. The new root is assembled at CAIRN_NEWROOT.

# root_mount_lower: mount the base system read-only at CAIRN_LOWER_DIR.
# It is the one image a boot cannot do without.
root_mount_lower() {
  _rl_image=$ROOT$CAIRN_DATA_DIR/$CAIRN_ROOTFS
  if [ ! -f "$_rl_image" ]; then
    err "$CAIRN_ROOTFS is missing from the data partition"
    return 1
  fi
  mkdir -p "$ROOT$CAIRN_LOWER_DIR" || return 1
  if ! mount -t squashfs -o ro,loop "$_rl_image" "$ROOT$CAIRN_LOWER_DIR"; then
    err "$CAIRN_ROOTFS cannot be mounted (damaged, or no squashfs or loop support)"
    return 1
  fi
}

# root_mount_overlay: the merged root at CAIRN_NEWROOT.
root_mount_overlay() {
  mkdir -p "$ROOT$CAIRN_NEWROOT" || return 1
  set -- "lowerdir=$ROOT$CAIRN_LOWER_DIR"
  set -- "$1,upperdir=$ROOT$CAIRN_UPPER_DIR,workdir=$ROOT$CAIRN_WORK_DIR"
  if ! mount -t overlay -o "$1" cairn-root "$ROOT$CAIRN_NEWROOT"; then
    err "cannot mount the overlay root ($1)"
    return 1
  fi
}

# root_mount_image IMAGE DIR: mount IMAGE from the data partition read-only
# on DIR in the new root, if the image is there. Without it, DIR is what the
# base system has.
root_mount_image() {
  _ri_image=$ROOT$CAIRN_DATA_DIR/$1
  _ri_dir=$ROOT$CAIRN_NEWROOT$2
  if [ ! -f "$_ri_image" ]; then
    info "no $1 on the data partition; $2 is the base system's"
    return 0
  fi
  if mkdir -p "$_ri_dir" && mount -t squashfs -o ro,loop "$_ri_image" "$_ri_dir"; then
    info "mounted $1 on $2"
  else
    warn "cannot mount $1; $2 is the base system's"
  fi
}

# root_mount_extras KVER: the kernel modules and the firmware, both optional.
root_mount_extras() {
  root_mount_image "$CAIRN_MODULES_PREFIX$1$CAIRN_MODULES_SUFFIX" "/lib/modules/$1"
  root_mount_image "$CAIRN_FIRMWARE" /lib/firmware
}

# root_move_mounts: the data partition to CAIRN_DATA_DIR in the new root, and
# /run (holding the upper and lower layers under CAIRN_RUN_DIR), /sys, /dev
# and /proc to the same places there. /proc goes last: is_mounted reads it.
root_move_mounts() {
  _rm_new=$ROOT$CAIRN_NEWROOT
  for _rm_dir in "$CAIRN_DATA_DIR" /run /sys /dev /proc; do
    is_mounted "$ROOT$_rm_dir" || continue
    if ! mkdir -p "$_rm_new$_rm_dir" ||
      ! mount --move "$ROOT$_rm_dir" "$_rm_new$_rm_dir"; then
      err "cannot move $_rm_dir into the new root"
      return 1
    fi
  done
}

# root_switch [ARGS...]: hand the machine to cairn_init in the new root,
# with the arguments the kernel gave this init.
root_switch() {
  _rs_new=$ROOT$CAIRN_NEWROOT
  if [ ! -e "$_rs_new$cairn_init" ] && [ ! -L "$_rs_new$cairn_init" ]; then
    err "$cairn_init is not in the new root"
    return 1
  fi
  if ! command -v "$CAIRN_SWITCH_ROOT" >/dev/null 2>&1; then
    err "$CAIRN_SWITCH_ROOT is not in this initramfs"
    return 1
  fi
  info "switching to the new root: $cairn_init"
  exec "$CAIRN_SWITCH_ROOT" "$_rs_new" "$cairn_init" "$@"
}
