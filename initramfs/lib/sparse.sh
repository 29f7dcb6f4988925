# shellcheck shell=sh
# Sparse files too large to squash as they are (a 1 TiB disk image holding a
# few MiB). A save keeps each one's data without its holes in
# $CAIRN_SPARSE_DIR at the state's root, with a map of where the data goes
# and the files' xattrs (src/save/sparse.ts, docs/state-format.md). Once the
# state is unpacked each file is rebuilt where it was: made as large as it
# was, holes and all, its data copied back with dd, then its owner, mode,
# xattrs and times set; the record goes, so the root never shows it. A
# state without the record needs nothing.

# sparse_expand DIR: rebuild the files DIR/$CAIRN_SPARSE_DIR records, then
# remove the record. The save verified that their directories are the
# state's own and that nothing else holds their paths. On failure print why,
# as words that follow the state's name; the status is 2 when the upper
# layer ran out of space.
sparse_expand() {
  _se_rec=$1/$CAIRN_SPARSE_DIR
  if [ ! -d "$_se_rec" ] || [ -L "$_se_rec" ]; then
    return 0
  fi
  _se_last=
  _se_files=0
  # shellcheck disable=SC2034 # the times are set in the second pass
  while read -r _se_n _se_size _se_mode _se_uid _se_gid _se_mtime _se_dmtime _se_bs _se_ext _se_path; do
    case $_se_n in '#'* | '') continue ;; esac
    _se_to=$(printf '%bx' "$_se_path")
    _se_to=$1/${_se_to%x}
    if [ "$_se_n" = "$_se_last" ]; then
      # A hard link to the file the line before rebuilt.
      ln "$_se_first" "$_se_to" 2>/dev/null || {
        echo "could not rebuild its sparse file /$_se_path (a hard link)"
        return 1
      }
      continue
    fi
    _se_last=$_se_n
    _se_first=$_se_to
    sparse_build "$_se_rec/$_se_n" "$_se_to" "$_se_size" "$_se_bs" "$_se_ext" || return
    if ! chown "$_se_uid:$_se_gid" "$_se_to" || ! chmod "$_se_mode" "$_se_to"; then
      echo "could not give its sparse file /$_se_path its owner and mode"
      return 1
    fi
    _se_files=$((_se_files + 1))
  done <"$_se_rec/map"
  if [ -s "$_se_rec/xattrs" ] &&
    ! _se_err=$(cd "$1" && setfattr -h --restore="$CAIRN_SPARSE_DIR/xattrs" 2>&1 >/dev/null); then
    echo "could not have its sparse files' xattrs set again ($(echo "$_se_err" | grep -v '^Warning: ' | grep . | tail -n 1))"
    return 1
  fi
  # Last, as the file and the directory it was made in were changed above.
  while read -r _se_n _se_size _se_mode _se_uid _se_gid _se_mtime _se_dmtime _se_bs _se_ext _se_path; do
    case $_se_n in '#'* | '') continue ;; esac
    _se_to=$(printf '%bx' "$_se_path")
    _se_to=$1/${_se_to%x}
    if ! touch -c -d "@$_se_mtime" "$_se_to" || ! touch -c -d "@$_se_dmtime" "${_se_to%/*}"; then
      echo "could not give its sparse file /$_se_path its time"
      return 1
    fi
  done <"$_se_rec/map"
  debug "sparse files rebuilt: $_se_files"
  rm -rf "$_se_rec"
}

# sparse_build DATA FILE SIZE BS EXTENTS: make FILE SIZE bytes of holes, then
# copy DATA's bytes, end to end, to the extents (offset:length,... or -) in
# blocks of BS bytes, which divides every offset and length but the last.
sparse_build() {
  # With seek= and no conv=notrunc, dd sets the file's size: all holes.
  sparse_dd if=/dev/null of="$2" bs=1 seek="$3" || return
  _sb_at=0
  for _sb_x in $(echo "$5" | tr , ' '); do
    [ "$_sb_x" != - ] || break
    _sb_off=${_sb_x%:*}
    _sb_len=${_sb_x#*:}
    sparse_dd if="$1" of="$2" bs="$4" skip=$((_sb_at / $4)) seek=$((_sb_off / $4)) \
      count=$(((_sb_len + $4 - 1) / $4)) conv=notrunc || return
    _sb_at=$((_sb_at + _sb_len))
  done
}

# sparse_dd ARGS: dd, quiet; on failure print why (status 2: no space left).
sparse_dd() {
  if _sd_err=$(dd "$@" 2>&1 >/dev/null); then
    return 0
  fi
  case $_sd_err in
    *"No space left"*)
      echo "does not fit in the upper layer (it ran out of space rebuilding a sparse file; see cairn.upper_size)"
      return 2
      ;;
  esac
  echo "could not rebuild a sparse file: $(echo "$_sd_err" | grep . | tail -n 1)"
  return 1
}
