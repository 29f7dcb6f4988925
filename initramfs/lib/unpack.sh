# shellcheck shell=sh
# Filling the upper layer with the chosen state. unsquashfs runs as root, so
# it keeps owners, the whiteouts (character devices 0/0) and the xattrs,
# trusted.overlay.opaque among them. The data partition is only read.

# state_need FILE: the bytes the files in FILE take at least (their sizes
# added up), printed; 0 when the image cannot be listed.
state_need() {
  unsquashfs -lln "$1" 2>/dev/null |
    awk '/^-/ { n += $3 } END { printf "%.0f\n", n }'
}

# state_unpack FILE DIR: unpack FILE into DIR. On failure print why, as words
# that follow the file's name; the status is 2 when the state does not fit.
state_unpack() {
  _su_need=$(state_need "$1")
  _su_free=$(fs_free_bytes "$2") || _su_free=
  if [ -n "$_su_free" ] && [ "${_su_need:-0}" -gt "$_su_free" ]; then
    echo "does not fit in the upper layer (needs $(mib "$_su_need") MiB," \
      "$(mib "$_su_free") MiB free; see cairn.upper_size)"
    return 2
  fi
  info "unpacking ${1##*/} ($(mib "${_su_need:-0}") MiB of files)"
  if _su_out=$(unsquashfs -f -no-progress -d "$2" "$1" 2>&1); then
    debug "unsquashfs: $(echo "$_su_out" | grep '^created' | tr '\n' ' ')"
    return 0
  fi
  case $_su_out in
    *"No space left"*)
      echo "does not fit in the upper layer (it ran out of space; the files" \
        "need at least $(mib "${_su_need:-0}") MiB; see cairn.upper_size)"
      return 2
      ;;
  esac
  echo "could not be unpacked: $(echo "$_su_out" | grep . | tail -n 1)"
  return 1
}

# state_fill: unpack the selected state (state_select) into the upperdir;
# when that fails, empty the upper layer and fall back to clean.
state_fill() {
  [ "$cairn_used" != clean ] || return 0
  if _sf_why=$(state_unpack "$cairn_state_file" "$ROOT$CAIRN_UPPER_DIR"); then
    return 0
  fi
  upper_reset || return 1
  fallback "${cairn_state_file##*/} $_sf_why" clean
  cairn_used=clean
  cairn_state_file=
  cairn_state_id=
}
