# shellcheck shell=sh
# Saved states: which one to unpack, whether it is intact, and the fallback
# when it is not. A state that is missing or whose seal is not whole is
# never unpacked; one whose bytes fail their check (state_verify, run while
# it is unpacked) is thrown away with the upper layer. Either way the boot
# goes on with the next state. The fallbacks (docs/state-format.md):
#   default -> backup -> clean
#   backup  -> clean
#   gen-<n> -> clean   (an older generation is asked for on purpose, usually
#                       to get away from the newer states: booting one of
#                       them instead would be a surprise; clean saves nothing)

# state_name WHICH: the file on the data partition for default, backup or
# gen-<n>.
state_name() {
  case $1 in
    default) echo "$CAIRN_NEWEST" ;;
    backup) echo "$CAIRN_BACKUP" ;;
    gen-*) echo "$CAIRN_GENERATION_PREFIX${1#gen-}$CAIRN_STATE_SUFFIX" ;;
    *) return 1 ;;
  esac
}

# state_next WHICH: what to boot when WHICH cannot be.
state_next() {
  case $1 in
    default) echo backup ;;
    *) echo clean ;;
  esac
}

# state_describe WHICH: WHICH in words, for messages.
state_describe() {
  case $1 in
    default) echo "the newest state ($CAIRN_NEWEST)" ;;
    backup) echo "the backup ($CAIRN_BACKUP)" ;;
    clean) echo "clean (no saved state)" ;;
    *) echo "generation ${1#gen-} ($(state_name "$1"))" ;;
  esac
}

# seal_fields [MAGIC]: read a seal on stdin; print its key=value lines when it
# starts with the magic line (a state's, or MAGIC: a delta's, lib/chain.sh)
# and ends its fields with "end" followed by nothing but
# newlines. Fails otherwise: 2 when a key comes twice (which value counts
# would be a guess that cairn status could make otherwise; src/state/seal.ts
# decodeSeal refuses it too), 1 for anything else.
seal_fields() {
  IFS= read -r _sf_line && [ "$_sf_line" = "${1:-$CAIRN_SEAL_MAGIC}" ] || return 1
  # Keys seen so far, each followed by "=", which no key holds.
  _sf_keys="="
  while IFS= read -r _sf_line || [ -n "$_sf_line" ]; do
    case $_sf_line in
      end)
        # The padding at once: the shell reads a pipe a byte at a time,
        # and the seal is mostly padding. Nothing but newlines: as many
        # bytes as newlines.
        _sf_counts=$(wc -lc)
        # shellcheck disable=SC2086 # split on purpose: "lines bytes"
        set -- $_sf_counts
        [ "$1" = "$2" ]
        return
        ;;
      [a-z]*=*)
        _sf_key=${_sf_line%%=*}
        case $_sf_keys in
          *"=$_sf_key="*) return 2 ;;
        esac
        _sf_keys=$_sf_keys$_sf_key=
        printf '%s\n' "$_sf_line"
        ;;
      *) return 1 ;;
    esac
  done
  return 1
}

# seal_read FILE [MAGIC]: set seal_read_fields to the fields of the seal at
# the end of FILE (seal_fields, whose status it returns; when it fails, the
# fields it read before).
seal_read() {
  seal_read_fields=$(tail -c "$CAIRN_SEAL_SIZE" "$1" | seal_fields "$2")
}

# seal_get FIELDS KEY: set seal_got to the value of KEY in FIELDS
# (seal_fields output), empty when it has none. In the shell alone, without
# a fork: the boot reads several fields of the seal of every link of a chain.
# A value holds no newline and a key comes once (seal_fields), so the first
# line that starts with KEY= is the one.
seal_get() {
  # A newline before the first line too: every field then follows one.
  _sg_fields="
$1"
  seal_got=
  case $_sg_fields in
    *"
$2="*)
      seal_got=${_sg_fields#*"
$2="}
      seal_got=${seal_got%%"
"*}
      ;;
  esac
}

# state_check FILE [MAGIC]: succeed when FILE may be an intact state: a
# regular file whose size is the sealed size plus the seal, and whose seal
# is whole and a state's (or, with MAGIC, a delta's: lib/chain.sh). Its
# bytes are checked by state_verify. Sets checked_seal to the seal's fields
# and checked_size to the file's bytes, for the caller to use without
# reading the file again (seal_get). On failure print why, as words that
# follow the file's name.
state_check() {
  checked_seal=
  # A symbolic link is never followed: it would resolve here, in the
  # initramfs, not on the data partition (and cairn status says the same).
  [ ! -L "$1" ] || { echo "is a symbolic link, not a state image" && return 1; }
  [ -e "$1" ] || { echo "is missing" && return 1; }
  [ ! -d "$1" ] || { echo "is a directory, not a state image" && return 1; }
  [ -f "$1" ] || { echo "is a special file, not a state image" && return 1; }
  _sc_total=$(stat -c %s "$1") || { echo "cannot be read" && return 1; }
  _sc_rc=1
  if [ "$_sc_total" -gt "$CAIRN_SEAL_SIZE" ]; then
    seal_read "$1" "$2"
    _sc_rc=$?
  fi
  case $_sc_rc in
    0) ;;
    2) echo "has a seal with duplicate keys" && return 1 ;;
    *)
      # A delta extends a state and is never unpacked alone (lib/chain.sh).
      if [ -z "$2" ] && is_delta "$1"; then
        echo "is a checkpoint delta, not a whole state"
        return 1
      fi
      echo "has no intact seal at its end (truncated, damaged or not a cairn state)"
      return 1
      ;;
  esac
  seal_get "$seal_read_fields" size
  _sc_size=$seal_got
  seal_get "$seal_read_fields" sha256
  _sc_sum=$seal_got
  case $_sc_size in
    '' | 0* | *[!0-9]*) _sc_size=x ;;
  esac
  case $_sc_sum in
    *[!0-9a-f]*) _sc_sum= ;;
  esac
  if [ "$_sc_size" = x ] || [ "${#_sc_size}" -gt 18 ] || [ "${#_sc_sum}" -ne 64 ]; then
    echo "has a seal without a valid size or sha256"
    return 1
  fi
  case "
$seal_read_fields" in
    *"
cksum_fix="*)
      seal_get "$seal_read_fields" cksum_fix
      _sc_fix=$seal_got
      case $_sc_fix in
        *[!01]*) _sc_fix= ;;
      esac
      [ "${#_sc_fix}" -eq 32 ] || { echo "has a seal without a valid cksum_fix" && return 1; }
      ;;
  esac
  if [ "$_sc_total" -ne $((_sc_size + CAIRN_SEAL_SIZE)) ]; then
    echo "is $_sc_total bytes where its seal says $((_sc_size + CAIRN_SEAL_SIZE))" \
      "(truncated or damaged)"
    return 1
  fi
  checked_seal=$seal_read_fields
  checked_size=$_sc_total
}

# state_verify FILE [MAGIC]: succeed when the bytes of FILE (state_check passed)
# are what was sealed. A seal with cksum_fix (docs/state-format.md) makes
# the POSIX cksum of the whole file, seal included, CAIRN_SEAL_CKSUM: one
# read of the file by cksum, which runs at the speed of the device where
# the base carries coreutils' cksum (busybox's is slower). An older seal
# has the sha256 of the image only. On failure print why, as words that
# follow the file's name.
state_verify() {
  seal_read "$1" "$2" ||
    { echo "has no intact seal at its end (truncated, damaged or not a cairn state)" && return 1; }
  seal_get "$seal_read_fields" cksum_fix
  if [ -n "$seal_got" ]; then
    _sv_size=$(stat -c %s "$1") || { echo "cannot be read" && return 1; }
    state_cksum "$1" "$_sv_size"
    return
  fi
  seal_get "$seal_read_fields" size
  _sv_have=$(head -c "$seal_got" "$1" | sha256sum)
  seal_get "$seal_read_fields" sha256
  [ "${_sv_have%% *}" = "$seal_got" ] ||
    { echo "fails its checksum (sha256 mismatch)" && return 1; }
}

# state_cksum FILE SIZE [SUM]: succeed when the POSIX cksum of the whole of
# FILE, whose seal has cksum_fix, is CAIRN_SEAL_CKSUM, over its SIZE bytes
# (state_verify). With SUM, what cksum printed of FILE when it was given
# several files at once (CRC, size, name; empty when it printed nothing of
# it), instead of running it again. On failure print why, as words that
# follow the file's name.
state_cksum() {
  if [ $# -ge 3 ]; then
    [ -n "$3" ] || { echo "cannot be read" && return 1; }
    _cs_have=$3
    _cs_want="$CAIRN_SEAL_CKSUM $2 $1"
  else
    _cs_have=$(cksum <"$1") || { echo "cannot be read" && return 1; }
    _cs_want="$CAIRN_SEAL_CKSUM $2"
  fi
  [ "$_cs_have" = "$_cs_want" ] ||
    { echo "fails its checksum (cksum mismatch)" && return 1; }
}

# state_id FILE: the id in FILE's seal.
state_id() {
  # What a seal that fails its form says before it fails counts too: the
  # id of a damaged state tells it apart (state_identity).
  seal_read "$1"
  seal_get "$seal_read_fields" id
  echo "$seal_got"
}

# fallback REASON NEXT: say why the boot goes on with NEXT, and record it.
fallback() {
  warn "$1; booting $(state_describe "$2") instead"
  cairn_fallback=${cairn_fallback:+$cairn_fallback; }$1
}

# state_identity FILE: how the runtime tells a state apart whatever its name
# (src/state/states.ts identity): its seal id (a state's or, for the tip
# of a chain, a delta's), or ino:<inode> when the seal cannot be read.
# Nothing for a file that is not there.
state_identity() {
  [ -f "$1" ] && [ ! -L "$1" ] || return 0
  _si_id=$(state_id "$1" 2>/dev/null)
  [ -n "$_si_id" ] || _si_id=$(delta_id "$1" 2>/dev/null)
  if [ -n "$_si_id" ]; then
    echo "$_si_id"
  else
    echo "ino:$(stat -c %i "$1")"
  fi
}

# state_skip FILE REASON NEXT: FILE could not be booted: fall back to NEXT and
# record FILE in cairn_skipped, so that this session's saves keep it.
state_skip() {
  _sk_id=$(state_identity "$1")
  [ -z "$_sk_id" ] || cairn_skipped=${cairn_skipped:+$cairn_skipped }$_sk_id
  fallback "$2" "$3"
}

# state_select REQUESTED: walk the fallbacks from REQUESTED to the first
# intact state. Sets cairn_used (default, backup, gen-<n> or clean),
# cairn_state_file (empty for clean), cairn_state_id, cairn_fallback and
# cairn_skipped (the identities of the states passed over).
state_select() {
  cairn_fallback=
  cairn_skipped=
  # GRUB booted the backup because the newest state used its tries: the
  # newest is passed over as a fallback would pass it, and held.
  if [ "$cairn_rollback" = state ] && [ "$1" = backup ]; then
    cairn_boot=default
    _ss_newest=$ROOT$CAIRN_DATA_DIR/$CAIRN_NEWEST
    state_skip "$_ss_newest" "$CAIRN_NEWEST did not bring the system up in its tries (boot counting)" backup
    state_walk backup
    return 0
  fi
  # A new stick has nothing to fall back from: its clean boot is the plan.
  if [ "$1" = default ] && state_none "$ROOT$CAIRN_DATA_DIR"; then
    cairn_used=clean
    cairn_state_file=
    cairn_state_id=
    info "no saved state on this stick yet (its first boot): booting $(state_describe clean)"
    return 0
  fi
  state_walk "$1"
}

# state_none DIR: whether DIR holds no state at all, not even a damaged or
# odd entry at a state's name.
state_none() {
  for _so_f in "$1/$CAIRN_NEWEST" "$1/$CAIRN_BACKUP" "$1/$CAIRN_GENERATION_PREFIX"*"$CAIRN_STATE_SUFFIX"; do
    if [ -e "$_so_f" ] || [ -L "$_so_f" ]; then
      return 1
    fi
  done
}

# state_walk WHICH: state_select from WHICH on, adding to the fallbacks
# already recorded. A state name holds a whole state or the tip of a
# checkpoint chain (lib/chain.sh tip_check); for a tip cairn_state_chain
# holds the ids of the links before it, and is empty otherwise.
state_walk() {
  _ss_which=$1
  cairn_state_chain=
  cairn_chain_applied=0
  cairn_chain_dropped=
  while [ "$_ss_which" != clean ]; do
    _ss_name=$(state_name "$_ss_which")
    _ss_file=$ROOT$CAIRN_DATA_DIR/$_ss_name
    info "checking $_ss_name"
    if _ss_why=$(state_check "$_ss_file"); then
      state_use "$_ss_which" "$_ss_file" "$(state_id "$_ss_file")" ''
      return 0
    fi
    # A tip is a regular file: state_check has said what any other entry is.
    if [ -f "$_ss_file" ] && [ ! -L "$_ss_file" ] && is_delta "$_ss_file" &&
      _ss_why=$(tip_check "$_ss_file"); then
      state_use "$_ss_which" "$_ss_file" "$(delta_id "$_ss_file")" "$(delta_chain "$_ss_file")"
      return 0
    fi
    _ss_next=$(state_next "$_ss_which")
    state_skip "$_ss_file" "$_ss_name $_ss_why" "$_ss_next"
    _ss_which=$_ss_next
  done
  cairn_used=clean
  cairn_state_file=
  cairn_state_id=
  info "booting $(state_describe clean)"
}

# state_use WHICH FILE ID CHAIN: boot FILE, the state WHICH, whose seal id
# is ID: a whole state when CHAIN is empty, else the tip of the chain CHAIN.
state_use() {
  cairn_used=$1
  cairn_state_file=$2
  cairn_state_id=$3
  cairn_state_chain=$4
  _sx_links=
  [ -z "$4" ] || _sx_links=": $(chain_words "$(echo "$4" | tr , '\n' | wc -l)")"
  info "booting $(state_describe "$1"), id ${3:-none}$_sx_links"
}
