# shellcheck shell=sh
# Checkpoint chains: a whole state (the base) and the deltas written after it
# (docs/state-format.md "Checkpoint deltas"). Each delta is a squashfs image
# of what changed since the link before it, then the paths removed since
# (NUL-separated, padded with NULs), then a seal with its own magic line. A
# delta is applied to the upper layer holding its parent: the paths of its
# removal list go first, then its squashfs part is unpacked over the rest.

# delta_id FILE: the id in the delta FILE's seal.
delta_id() {
  tail -c "$CAIRN_SEAL_SIZE" "$1" | seal_fields "$CAIRN_DELTA_MAGIC" | seal_value id
}

# delta_check FILE [CHAIN]: succeed when FILE is an intact delta, its bytes
# checked, and, with CHAIN, when it extends exactly the links CHAIN names
# (their ids, the base first, comma-separated). On failure print why, as
# words that follow the file's name.
delta_check() {
  state_check "$1" "$CAIRN_DELTA_MAGIC" || return 1
  _dc_fields=$(tail -c "$CAIRN_SEAL_SIZE" "$1" | seal_fields "$CAIRN_DELTA_MAGIC")
  # The cksum of the whole file is the check: a delta's seal always has it.
  echo "$_dc_fields" | grep -q '^cksum_fix=' || { echo "has a delta seal without cksum_fix" && return 1; }
  _dc_size=$(echo "$_dc_fields" | seal_value size)
  _dc_removed=$(echo "$_dc_fields" | seal_value removed)
  case $_dc_removed in
    '' | 0?* | *[!0-9]*) _dc_removed=x ;;
  esac
  if [ "$_dc_removed" = x ] || [ "${#_dc_removed}" -gt 18 ] || [ "$_dc_removed" -ge "$_dc_size" ]; then
    echo "has a delta seal without a valid removed" && return 1
  fi
  if [ -n "$2" ]; then
    _dc_chain=$(echo "$_dc_fields" | seal_value chain)
    [ "$_dc_chain" = "$2" ] ||
      { echo "does not extend the links before it (it extends $_dc_chain, not $2)" && return 1; }
  fi
  state_verify "$1" "$CAIRN_DELTA_MAGIC"
}

# The check of a batch of removal list paths, run by xargs in the upper
# layer: each relative, without an empty, . or .. component, and below
# directories only, never a symbolic link (rm -rf does not follow the path
# itself). Prints the first bad one and fails.
# shellcheck disable=SC2016 # expanded by the sh xargs runs
DELTA_PATHS_CHECK='for p; do
  [ -n "$p" ] || continue
  case /$p/ in
    // | //* | *//* | */./* | */../*) printf "a bad path in its removal list: %s\n" "$p"; exit 1 ;;
  esac
  a=$p
  while case $a in */*) true ;; *) false ;; esac; do
    a=${a%/*}
    if [ -L "$a" ] || [ ! -d "$a" ]; then
      printf "a path in its removal list below what is not a directory: %s\n" "$p"; exit 1
    fi
  done
done'

# delta_apply UPPER FILE [CHAIN]: apply the delta FILE to UPPER, which holds
# its parent. The delta is checked whole first (delta_check) and every path
# of its removal list before anything is removed: a delta that fails them
# leaves UPPER as it was, with status 1. A failure once UPPER is being
# changed (a removal or the unpack) leaves it holding neither link: status
# 3, and the caller throws UPPER away. On failure print why, as words that
# follow the file's name.
delta_apply() {
  delta_check "$2" "$3" || return 1
  _da_fields=$(tail -c "$CAIRN_SEAL_SIZE" "$2" | seal_fields "$CAIRN_DELTA_MAGIC")
  _da_removed=$(echo "$_da_fields" | seal_value removed)
  if ! _da_list=$(mktemp); then
    echo "could not be applied: no temp file for its removal list" && return 1
  fi
  # The list ends where the seal begins; its NUL padding goes.
  tail -c $((_da_removed + CAIRN_SEAL_SIZE)) "$2" | head -c "$_da_removed" | tr -s '\000' >"$_da_list"
  if ! _da_err=$(cd "$1" && xargs -0 sh -c "$DELTA_PATHS_CHECK" sh <"$_da_list" 2>&1); then
    rm -f "$_da_list"
    printf '%s\n' "$_da_err" | grep . | head -n 1
    return 1
  fi
  # From here on UPPER changes.
  # shellcheck disable=SC2016 # expanded by the sh xargs runs
  if ! _da_err=$(cd "$1" && xargs -0 sh -c 'for p do shift; [ -z "$p" ] || set -- "$@" "$p"; done; [ $# -eq 0 ] || rm -rf -- "$@"' sh <"$_da_list" 2>&1); then
    rm -f "$_da_list"
    echo "could not have its removals done ($(echo "$_da_err" | grep . | tail -n 1))"
    return 3
  fi
  rm -f "$_da_list"
  if ! _da_err=$(unsquashfs -f -no-progress -d "$1" "$2" 2>&1 >/dev/null); then
    case $_da_err in
      *"No space left"*) echo "does not fit in the upper layer (it ran out of space; see cairn.upper_size)" ;;
      *) echo "could not be unpacked: $(echo "$_da_err" | grep . | tail -n 1)" ;;
    esac
    return 3
  fi
  acl_restore "$1" || return 3
}

# chain_apply UPPER BASE DELTA...: unpack the state BASE into UPPER, then
# apply each DELTA in order while each is intact and extends the links
# before it. The first that is not ends the chain: it and the ones after it
# are dropped and said, and UPPER holds the longest intact prefix. Sets
# cairn_chain_ids (the links used, comma-separated), cairn_chain_applied
# (how many deltas), cairn_chain_dropped (the file names of the links left
# out, space-separated) and cairn_chain_why (what ended the chain, after
# the file's name). Fails only when BASE cannot be used (status 1 or 2, as
# state_unpack), or a delta failed while UPPER was changing (status 3):
# UPPER is then to be thrown away.
chain_apply() {
  _ca_upper=$1
  _ca_base=$2
  shift 2
  cairn_chain_applied=0
  cairn_chain_dropped=
  cairn_chain_why=
  _ca_rc=0
  if ! cairn_chain_why=$(state_check "$_ca_base"); then
    _ca_rc=1
  else
    cairn_chain_why=$(state_unpack "$_ca_base" "$_ca_upper") || _ca_rc=$?
  fi
  if [ "$_ca_rc" -ne 0 ]; then
    cairn_chain_why="${_ca_base##*/} $cairn_chain_why"
    return "$_ca_rc"
  fi
  cairn_chain_why=
  cairn_chain_ids=$(state_id "$_ca_base")
  while [ $# -gt 0 ]; do
    info "applying checkpoint ${1##*/}"
    _ca_why=$(delta_apply "$_ca_upper" "$1" "$cairn_chain_ids")
    _ca_rc=$?
    if [ "$_ca_rc" -ne 0 ]; then
      cairn_chain_why="${1##*/} $_ca_why"
      # Past a status 3 nothing of this chain is kept: the caller falls back.
      [ "$_ca_rc" -ne 3 ] || return 3
      for _ca_f; do
        cairn_chain_dropped=${cairn_chain_dropped:+$cairn_chain_dropped }${_ca_f##*/}
      done
      warn "$cairn_chain_why: the chain ends before it; dropped: $cairn_chain_dropped"
      return 0
    fi
    cairn_chain_ids=$cairn_chain_ids,$(delta_id "$1")
    cairn_chain_applied=$((cairn_chain_applied + 1))
    shift
  done
}

# is_delta FILE: whether the seal at the end of FILE starts as a delta's,
# whatever follows (state_check or delta_check tell whether it is whole).
is_delta() {
  [ "$(tail -c "$CAIRN_SEAL_SIZE" "$1" 2>/dev/null | head -n 1)" = "$CAIRN_DELTA_MAGIC" ]
}

# delta_chain FILE: the ids its seal's chain names (base first,
# comma-separated), each a name the boot can put in a path unquoted
# (docs/state-format.md). On failure print why, as words that follow the
# file's name.
delta_chain() {
  _dh_chain=$(tail -c "$CAIRN_SEAL_SIZE" "$1" | seal_fields "$CAIRN_DELTA_MAGIC" | seal_value chain)
  case ,$_dh_chain, in
    *,,* | *[!A-Za-z0-9_.:,-]*) echo "has a delta seal without a valid chain" && return 1 ;;
  esac
  echo "$_dh_chain"
}

# chain_link TIP ID: the file of the link ID of the chain whose tip is the
# file TIP, on the same data partition.
chain_link() {
  echo "${1%/*}/$CAIRN_CHECKPOINTS/$2$CAIRN_STATE_SUFFIX"
}

# tip_check FILE: succeed when the delta FILE, under a state's name, may be
# booted: its seal is whole and its base is there and passes state_check.
# The links between them are checked as they are applied: one missing or
# damaged only ends the chain early. On failure print why, as words that
# follow the file's name.
tip_check() {
  state_check "$1" "$CAIRN_DELTA_MAGIC" || return 1
  _tc_chain=$(delta_chain "$1") || { echo "$_tc_chain" && return 1; }
  _tc_base=$(chain_link "$1" "${_tc_chain%%,*}")
  _tc_why=$(state_check "$_tc_base") ||
    { echo "is a checkpoint whose base $CAIRN_CHECKPOINTS/${_tc_base##*/} $_tc_why" && return 1; }
}

# chain_words N: a chain of N deltas, in words for messages.
chain_words() {
  case $1 in
    0) echo "the base alone" ;;
    1) echo "a base and 1 checkpoint" ;;
    *) echo "a base and $1 checkpoints" ;;
  esac
}

# chain_fill: unpack the chain whose tip is the selected state
# (cairn_state_file, cairn_state_chain) into the upperdir. A link that ends
# the chain early leaves the prefix before it: cairn_state_id becomes the
# last link applied, the tip is recorded in cairn_skipped (its session is
# not what this boot shows) and the cut in cairn_fallback. Fails like
# chain_apply, with cairn_chain_why naming the tip.
chain_fill() {
  _cf_tip=$cairn_state_file
  set --
  _cf_ifs=$IFS
  IFS=,
  for _cf_id in $cairn_state_chain; do
    set -- "$@" "$(chain_link "$_cf_tip" "$_cf_id")"
  done
  IFS=$_cf_ifs
  if ! chain_apply "$ROOT$CAIRN_UPPER_DIR" "$@" "$_cf_tip"; then
    case $cairn_chain_why in
      "${_cf_tip##*/} "*) ;;
      *) cairn_chain_why="${_cf_tip##*/}: $cairn_chain_why" ;;
    esac
    return 1
  fi
  [ -n "$cairn_chain_dropped" ] || return 0
  cairn_state_id=${cairn_chain_ids##*,}
  _cf_id=$(state_identity "$_cf_tip")
  [ -z "$_cf_id" ] || cairn_skipped=${cairn_skipped:+$cairn_skipped }$_cf_id
  _cf_said="${_cf_tip##*/}: its checkpoint chain ended early, at $cairn_chain_why;"
  _cf_said="$_cf_said booted $(chain_words "$cairn_chain_applied"), dropped: $cairn_chain_dropped"
  cairn_fallback=${cairn_fallback:+$cairn_fallback; }$_cf_said
}
