# shellcheck shell=sh
# The data partition: find it (waiting for slow USB sticks), unlock it when
# it is LUKS, mount it. Device names are the system's (/dev/sdb2) and are
# opened as "$ROOT$dev". Nothing here writes to the partition before it is
# mounted, and an encrypted one is only ever opened, never formatted.

# data_resolve SPEC: print the device SPEC (LABEL=, UUID= or /dev/...) names,
# if it is there now. findfs is busybox's or util-linux's; util-linux's blkid
# also knows LUKS2 labels, which busybox's findfs does not.
data_resolve() {
  case $1 in
    LABEL=* | UUID=*)
      findfs "$1" 2>/dev/null && return 0
      command -v blkid >/dev/null 2>&1 &&
        blkid -l -o device -t "$1" 2>/dev/null | grep -x '/dev/[^ :]*'
      ;;
    *) [ -b "$ROOT$1" ] && echo "$1" ;;
  esac
}

# data_find SPEC: wait up to CAIRN_FIND_TIMEOUT seconds for SPEC; set
# cairn_data_dev. On timeout, list the block devices that were there.
data_find() {
  config_number CAIRN_FIND_TIMEOUT 10
  _df_end=$(($(date +%s) + CAIRN_FIND_TIMEOUT))
  _df_said=
  while :; do
    if cairn_data_dev=$(data_resolve "$1") && [ -n "$cairn_data_dev" ]; then
      cairn_data_dev=$(echo "$cairn_data_dev" | head -n 1)
      info "data partition: $cairn_data_dev ($1)"
      return 0
    fi
    [ "$(date +%s)" -lt "$_df_end" ] || break
    if [ -z "$_df_said" ]; then
      info "waiting up to ${CAIRN_FIND_TIMEOUT}s for the data partition ($1)"
      _df_said=1
    fi
    coldplug
    sleep 0.5 2>/dev/null || sleep 1
  done
  err "no data partition $1 after ${CAIRN_FIND_TIMEOUT}s"
  data_list_devices
  return 1
}

# data_list_devices: the block devices the kernel knows (empty ones left
# out), with their labels when blkid can tell, so that a wrong cairn.data=
# can be put right.
data_list_devices() {
  err "block devices seen:"
  _dl_any=
  for _dl_sys in "$ROOT"/sys/class/block/*; do
    [ -e "$_dl_sys" ] || continue
    [ "$(cat "$_dl_sys/size" 2>/dev/null)" != 0 ] || continue
    _dl_dev=/dev/${_dl_sys##*/}
    _dl_line=$(blkid "$ROOT$_dl_dev" 2>/dev/null)
    err "  ${_dl_line:-$_dl_dev}"
    _dl_any=1
  done
  [ -n "$_dl_any" ] ||
    err "  none (is the driver for the stick's controller in the initramfs?)"
}

# data_unlock DEV: when DEV is LUKS, ask for its passphrase on the console
# (CAIRN_LUKS_TRIES tries) and open it; cairn_data_dev becomes the mapping.
# A partition that is not LUKS is left as it is.
data_unlock() {
  if ! command -v cryptsetup >/dev/null 2>&1; then
    case $(blkid -o value -s TYPE "$ROOT$1" 2>/dev/null) in
      crypto_LUKS)
        err "$1 is encrypted (LUKS) but this initramfs has no cryptsetup"
        return 1
        ;;
    esac
    return 0
  fi
  cryptsetup isLuks "$ROOT$1" 2>/dev/null || return 0
  info "$1 is encrypted (LUKS)"
  _du_try=1
  config_number CAIRN_LUKS_TRIES 3
  while [ "$_du_try" -le "$CAIRN_LUKS_TRIES" ]; do
    luks_ask "Passphrase for $1 ($_du_try of $CAIRN_LUKS_TRIES): " || break
    if printf '%s' "$luks_passphrase" |
      cryptsetup open --key-file=- "$ROOT$1" "$CAIRN_LUKS_NAME"; then
      luks_passphrase=
      cairn_data_dev=/dev/mapper/$CAIRN_LUKS_NAME
      info "unlocked $1 as $cairn_data_dev"
      return 0
    fi
    luks_passphrase=
    warn "wrong passphrase for $1"
    _du_try=$((_du_try + 1))
  done
  err "could not unlock $1"
  return 1
}

# luks_ask PROMPT: read a passphrase from the console into luks_passphrase,
# without echo when the console is a terminal. Fails at end of input.
luks_ask() {
  # Echo off before the prompt shows: what is typed after it never echoes.
  [ ! -t 0 ] || stty -echo 2>/dev/null
  printf '%s' "$1" >&2
  luks_passphrase=
  IFS= read -r luks_passphrase || [ -n "$luks_passphrase" ]
  set -- $?
  if [ -t 0 ]; then
    stty echo 2>/dev/null
    printf '\n' >&2
  fi
  return "$1"
}

# data_check DEV: before the data partition is mounted, the check a normal
# boot gives its file systems: e2fsck -p, which checks only a file system
# that was not cleanly unmounted (a power cut, a yanked stick) or is marked
# with errors, and repairs what is safe to repair unattended. Bounded by
# CAIRN_FSCK_TIMEOUT seconds (interrupted as Ctrl-C would, which e2fsck
# stops at cleanly). Sets cairn_data_check, the boot record's words, and
# cairn_data_ro when errors are left that need a person: such a partition
# is mounted read-only, so that no save writes to it.
data_check() {
  cairn_data_ro=
  if ! command -v e2fsck >/dev/null 2>&1; then
    cairn_data_check="not checked (this initramfs has no e2fsck)"
    warn "the data partition is $cairn_data_check"
    return 0
  fi
  config_number CAIRN_FSCK_TIMEOUT 600
  _dc_out=$(timeout -s INT "$CAIRN_FSCK_TIMEOUT" e2fsck -p "$ROOT$1" 2>&1)
  _dc_rc=$?
  _dc_said=$(echo "$_dc_out" | grep . | tr '\n\t' '  ' | sed 's/  */ /g; s/ $//')
  case $_dc_rc in
    0)
      cairn_data_check=clean
      # A power cut leaves the journal to replay, which e2fsck does quietly.
      case $_dc_out in
        *"recovering journal"*)
          cairn_data_check="journal replayed by e2fsck -p (it was not cleanly unmounted)"
          info "the data partition $1: $cairn_data_check"
          ;;
        *) debug "e2fsck -p $1: $_dc_said" ;;
      esac
      ;;
    1 | 2 | 3)
      cairn_data_check="repaired by e2fsck -p ($_dc_said)"
      info "the data partition $1 was not cleanly unmounted or had errors: $cairn_data_check"
      ;;
    *)
      case $_dc_rc in
        130 | 32) _dc_why="e2fsck -p did not finish within ${CAIRN_FSCK_TIMEOUT}s" ;;
        *) _dc_why="e2fsck -p exited $_dc_rc: $_dc_said" ;;
      esac
      cairn_data_check="errors left ($_dc_why); mounted read-only"
      cairn_data_ro=1
      err "the data partition $1 has errors that e2fsck -p does not repair by itself ($_dc_why)"
      err "it is mounted read-only: this session boots, but nothing is saved until it is repaired"
      err "to repair it: boot with cairn.debug=1 and run e2fsck -f $1 from the rescue shell, or run it on another machine"
      ;;
  esac
}

# data_mount DEV: mount the data partition (ext4), read-write unless
# data_check left it read-only.
data_mount() {
  mkdir -p "$ROOT$CAIRN_DATA_DIR" || return 1
  _dm_mode=rw
  [ -z "${cairn_data_ro:-}" ] || _dm_mode=ro
  if ! mount -t ext4 -o "$_dm_mode,noatime" "$ROOT$1" "$ROOT$CAIRN_DATA_DIR"; then
    err "cannot mount $1 as ext4 on $CAIRN_DATA_DIR"
    return 1
  fi
  info "mounted $1 on $CAIRN_DATA_DIR${cairn_data_ro:+ read-only}"
  [ -n "${cairn_data_ro:-}" ] || data_protect
}

# data_protect: only root reads the data partition's root and the saved
# states (they hold /etc/shadow and every user's files); a stick made
# before cairn set these modes is put right here, at its next boot.
data_protect() {
  chmod "$CAIRN_DATA_ROOT_MODE" "$ROOT$CAIRN_DATA_DIR" ||
    warn "cannot make $CAIRN_DATA_DIR readable by root only"
  for _state in "$ROOT$CAIRN_DATA_DIR/$CAIRN_NEWEST" "$ROOT$CAIRN_DATA_DIR/$CAIRN_BACKUP" \
    "$ROOT$CAIRN_DATA_DIR/$CAIRN_GENERATION_PREFIX"*"$CAIRN_STATE_SUFFIX" "$ROOT$CAIRN_DATA_DIR/$CAIRN_TEMP"; do
    [ -f "$_state" ] || continue
    chmod "$CAIRN_STATE_MODE" "$_state" || warn "cannot make ${_state##*/} readable by root only"
  done
  return 0
}
