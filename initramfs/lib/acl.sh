# shellcheck shell=sh
# POSIX ACLs. squashfs cannot store them (they are system.* xattrs), so a
# save records them in $CAIRN_ACL_DUMP at the state's root, as setfattr
# --restore reads them (docs/state-format.md). Once a state is unpacked they
# are put back, which also sets each file's group bits to its ACL's mask as
# saved, and the record goes: the root never shows it. A state saved before
# cairn kept ACLs has no record and needs nothing.

# acl_restore DIR: set the ACLs recorded in DIR/$CAIRN_ACL_DUMP, then remove
# the record. The save verified that the record names only paths the state
# holds, so every one is there, through the state's own directories. On
# failure print why, as words that follow the state's name.
acl_restore() {
  _ar_dump=$1/$CAIRN_ACL_DUMP
  if [ ! -f "$_ar_dump" ] || [ -L "$_ar_dump" ]; then
    return 0
  fi
  # An empty record (no ACLs in what was saved, as in most checkpoints)
  # needs no setfattr: every program run here is time the boot waits.
  if [ ! -s "$_ar_dump" ]; then
    rm -f "$_ar_dump"
    return
  fi
  # The exit status tells: newer setfattrs also warn on stderr about
  # restores that may follow symbolic links, which these cannot.
  if ! _ar_err=$(cd "$1" && setfattr -h --restore="$CAIRN_ACL_DUMP" 2>&1 >/dev/null); then
    echo "could not have its ACLs set again ($(echo "$_ar_err" | grep -v '^Warning: ' | grep . | tail -n 1))"
    return 1
  fi
  [ "${cairn_debug:-0}" != 1 ] || debug "ACLs set again on $(grep -c '^# file: ' "$_ar_dump") entries"
  rm -f "$_ar_dump"
}
