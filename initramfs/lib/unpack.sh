# shellcheck shell=sh
# Filling the upper layer with the chosen state. unsquashfs runs as root, so
# it keeps owners, the whiteouts (character devices 0/0) and the xattrs,
# trusted.overlay.opaque among them. The data partition is only read.

# state_need FILE: the bytes FILE's files took in the upper layer they were
# saved from (the seal's space: blocks really used, so a sparse file counts
# for its data only), printed; nothing when the seal does not say (states
# saved before cairn recorded it), and then only unsquashfs running out of
# space tells that a state does not fit.
state_need() {
  seal_read "$1"
  seal_get "$seal_read_fields" space
  _sn_space=$seal_got
  case $_sn_space in
    '' | *[!0-9]*) ;;
    *) [ "${#_sn_space}" -gt 18 ] || echo "$_sn_space" ;;
  esac
}

# state_unpack FILE DIR: unpack FILE into DIR while state_verify checks its
# bytes beside unsquashfs: both read the same file, so the device is read
# once, and on two cores the check costs unsquashfs little. A failed check
# stops unsquashfs and fails the unpack, whatever unsquashfs made of the
# damaged image: the caller throws the upper layer away. On failure print
# why, as words that follow the file's name; the status is 2 when the
# state does not fit.
state_unpack() {
  _su_out=
  _su_need=$(state_need "$1")
  _su_free=$(fs_free_bytes "$2") || _su_free=
  if [ -n "$_su_free" ] && [ -n "$_su_need" ] && [ "$_su_need" -gt "$_su_free" ]; then
    echo "does not fit in the upper layer (needs $(mib "$_su_need") MiB," \
      "$(mib "$_su_free") MiB free; see cairn.upper_size)"
    return 2
  fi
  if ! _su_check=$(mktemp) || ! _su_log=$(mktemp); then
    echo "could not be unpacked: no temp file for its check" && return 1
  fi
  info "unpacking ${1##*/}${_su_need:+ ($(mib "$_su_need") MiB of files)}"
  state_verify "$1" >"$_su_check" &
  _su_check_pid=$!
  unsquashfs -f -no-progress -d "$2" "$1" >"$_su_log" 2>&1 &
  _su_pid=$!
  if ! wait "$_su_check_pid"; then
    kill "$_su_pid" 2>/dev/null
    wait "$_su_pid"
    cat "$_su_check"
    rm -f "$_su_check" "$_su_log"
    return 1
  fi
  wait "$_su_pid"
  _su_rc=$?
  # Read only when it is said: every program run here is time the boot waits.
  if [ "$_su_rc" -ne 0 ] || [ "${cairn_debug:-0}" = 1 ]; then
    _su_out=$(cat "$_su_log")
  fi
  rm -f "$_su_check" "$_su_log"
  if [ "$_su_rc" -eq 0 ]; then
    [ -z "$_su_out" ] || debug "unsquashfs: $(echo "$_su_out" | grep '^created' | tr '\n' ' ')"
    # Sparse files first: the ACL record may name them.
    sparse_expand "$2" || return
    acl_restore "$2" || return 1
    return 0
  fi
  case $_su_out in
    *"No space left"*)
      echo "does not fit in the upper layer (it ran out of space;" \
        "$(mib "${_su_free:-0}") MiB were free; see cairn.upper_size)"
      return 2
      ;;
  esac
  echo "could not be unpacked: $(echo "$_su_out" | grep . | tail -n 1)"
  return 1
}

# state_fill: unpack the selected state (state_select) into the upperdir:
# a whole state, or the chain whose tip it is (chain_fill). A state that
# fails its check, does not fit or does not unpack falls back: the upper
# layer is emptied and the walk goes on with the next state (default ->
# backup -> clean).
state_fill() {
  while [ "$cairn_used" != clean ]; do
    if [ -n "$cairn_state_chain" ]; then
      chain_fill && return 0
      _sf_why=$cairn_chain_why
    else
      _sf_why=$(state_unpack "$cairn_state_file" "$ROOT$CAIRN_UPPER_DIR") && return 0
      _sf_why="${cairn_state_file##*/} $_sf_why"
    fi
    upper_reset || return 1
    _sf_next=$(state_next "$cairn_used")
    state_skip "$cairn_state_file" "$_sf_why" "$_sf_next"
    state_walk "$_sf_next"
  done
}
