# shellcheck shell=sh
# The boot, step by step. Each step is a function of this library; a step
# that cannot be done stops the boot with its reason (fatal).

main() {
  mount_pseudo || fatal "cannot mount /proc, /sys, /dev and /run"
  cmdline_parse
  info "boot=$cairn_boot upper=$cairn_upper data=$cairn_data"
  load_modules
  data_find "$cairn_data" ||
    fatal "the data partition ($cairn_data) was not found"
  data_grow_table "$cairn_data_dev"
  data_unlock "$cairn_data_dev" ||
    fatal "the data partition $cairn_data_dev could not be unlocked"
  data_check "$cairn_data_dev"
  data_mount "$cairn_data_dev" ||
    fatal "the data partition $cairn_data_dev could not be mounted"
  data_grow_fs "$cairn_data_dev"
  root_mount_lower ||
    fatal "the base system ($CAIRN_ROOTFS) could not be mounted"
  cairn_upper_bytes=$(upper_size_bytes "$cairn_upper_size")
  upper_create "$cairn_upper" "$cairn_upper_bytes" ||
    fatal "the upper layer could not be created"
  state_select "$cairn_boot"
  state_fill || fatal "the upper layer could not be emptied after a failed unpack"
  root_mount_overlay || fatal "the overlay root could not be mounted"
  root_mount_extras "$(kernel_version)"
  record_write || warn "cannot write the boot record $CAIRN_BOOT_RECORD"
  root_move_mounts || fatal "the mounts could not be moved into the new root"
  root_switch "$@" || fatal "cannot start $cairn_init"
}
