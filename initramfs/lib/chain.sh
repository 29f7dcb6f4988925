# shellcheck shell=sh
# Checkpoint chains: a whole state (the base) and the deltas written after it
# (docs/state-format.md "Checkpoint deltas"). Each delta is a squashfs image
# of what changed since the link before it, then the paths removed since
# (NUL-separated, padded with NULs), then a seal with its own magic line. A
# delta is applied to the upper layer holding its parent: the paths of its
# removal list go first, then its squashfs part is unpacked over the rest.

# delta_id FILE: the id in the delta FILE's seal.
delta_id() {
  seal_read "$1" "$CAIRN_DELTA_MAGIC"
  seal_get "$seal_read_fields" id
  echo "$seal_got"
}

# delta_check FILE CHAIN SUM: succeed when FILE is an intact delta, its
# bytes checked, that extends exactly the links CHAIN names (their ids, the
# base first, comma-separated). SUM is what cksum printed of FILE (see
# state_cksum). Sets delta_checked_id and delta_checked_removed (the bytes
# of its removal list). On failure print why, as words that follow the
# file's name.
delta_check() {
  state_check "$1" "$CAIRN_DELTA_MAGIC" || return 1
  # The cksum of the whole file is the check: a delta's seal always has it.
  seal_get "$checked_seal" cksum_fix
  [ -n "$seal_got" ] || { echo "has a delta seal without cksum_fix" && return 1; }
  seal_get "$checked_seal" size
  _dc_size=$seal_got
  seal_get "$checked_seal" removed
  delta_checked_removed=$seal_got
  case $delta_checked_removed in
    '' | 0?* | *[!0-9]*) delta_checked_removed=x ;;
  esac
  if [ "$delta_checked_removed" = x ] || [ "${#delta_checked_removed}" -gt 18 ] ||
    [ "$delta_checked_removed" -ge "$_dc_size" ]; then
    echo "has a delta seal without a valid removed" && return 1
  fi
  seal_get "$checked_seal" chain
  [ "$seal_got" = "$2" ] ||
    { echo "does not extend the links before it (it extends $seal_got, not $2)" && return 1; }
  seal_get "$checked_seal" id
  delta_checked_id=$seal_got
  state_cksum "$1" "$checked_size" "$3"
}

# delta_list FILE REMOVED OUT: write the removal list of the delta FILE,
# REMOVED bytes, to OUT, as xargs -0 reads it. The list ends where the seal
# begins; its NUL padding goes.
delta_list() {
  tail -c $(($2 + CAIRN_SEAL_SIZE)) "$1" | head -c "$2" | tr -s '\000' >"$3"
}

# chain_check DIR BASE DELTA...: check the links of a chain before they are
# applied, in the order chain_apply applies them, each against the ids of
# the links before it. Prints a line per link, the base first: "ok ID" for
# one that may be applied (the base is only read for its id: it is checked
# as it is unpacked), then, for the first delta that may not, "bad WHY",
# which ends the checks. The removal list of the n-th delta is left in
# DIR/n when it has one. Run beside the base's unpack: a delta is small, and
# its checks are mostly programs started, which the boot would otherwise
# wait for one by one.
chain_check() {
  _ck_dir=$1
  _ck_ids=$(state_id "$2")
  echo "ok $_ck_ids"
  shift 2
  [ $# -gt 0 ] || return 0
  # One cksum for every delta: a program started costs more than a
  # delta's bytes. It prints nothing of a file it cannot read, so each line
  # is taken for the file it names only.
  cksum "$@" >"$_ck_dir/sums" 2>/dev/null
  chain_check_each "$_ck_dir" "$_ck_ids" "$@" 4<"$_ck_dir/sums"
}

# chain_check_each DIR IDS DELTA...: chain_check's deltas, the ids before
# them IDS, with cksum's lines on fd 4.
chain_check_each() {
  _ck_dir=$1
  _ck_ids=$2
  shift 2
  _ck_n=0
  for _ck_f; do
    _ck_n=$((_ck_n + 1))
    # A line of another file means none of this one: the checks end here.
    IFS= read -r _ck_sum <&4 || _ck_sum=
    case $_ck_sum in
      *" $_ck_f") ;;
      *) _ck_sum= ;;
    esac
    if ! delta_check "$_ck_f" "$_ck_ids" "$_ck_sum" >"$_ck_dir/why"; then
      IFS= read -r _ck_why <"$_ck_dir/why"
      echo "bad $_ck_why"
      return 0
    fi
    if [ "$delta_checked_removed" -gt 0 ] &&
      ! delta_list "$_ck_f" "$delta_checked_removed" "$_ck_dir/$_ck_n"; then
      echo "bad could not be applied: no room for its removal list"
      return 0
    fi
    _ck_ids=$_ck_ids,$delta_checked_id
    echo "ok $delta_checked_id"
  done
}

# delta_paths_check UPPER LIST: succeed when every path of the removal list
# LIST (delta_list) may go from UPPER: relative, without an empty, . or ..
# component, and below directories only, never a symbolic link (rm -rf
# does not follow the path itself). In the shell alone, as the list is
# short: a program run per delta is time the boot waits. On failure print
# the first bad one.
delta_paths_check() {
  # shellcheck disable=SC3045 # busybox sh reads up to a NUL with -d ''
  while IFS= read -r -d '' _dp_path || [ -n "$_dp_path" ]; do
    case /$_dp_path/ in
      // | //* | *//* | */./* | */../*)
        printf 'a bad path in its removal list: %s\n' "$_dp_path" && return 1
        ;;
    esac
    _dp_dir=$_dp_path
    while case $_dp_dir in */*) true ;; *) false ;; esac do
      _dp_dir=${_dp_dir%/*}
      if [ -L "$1/$_dp_dir" ] || [ ! -d "$1/$_dp_dir" ]; then
        printf 'a path in its removal list below what is not a directory: %s\n' "$_dp_path" && return 1
      fi
    done
  done <"$2"
}

# delta_apply UPPER FILE [LIST]: apply the delta FILE, which passed
# delta_check, to UPPER, which holds its parent: the paths of its removal
# list LIST (delta_list; none without LIST) go, then its squashfs part is
# unpacked over the rest. Every path of the list is checked before anything
# is removed: a delta that fails them leaves UPPER as it was, with status 1.
# A failure once UPPER is being changed (a removal or the unpack) leaves it
# holding neither link: status 3, and the caller throws UPPER away. On
# failure print why, as words that follow the file's name.
delta_apply() {
  if [ -n "$3" ]; then
    delta_paths_check "$1" "$3" || return 1
    # From here on UPPER changes. No path is empty (delta_paths_check).
    if ! _da_err=$(cd "$1" && xargs -0 rm -rf -- <"$3" 2>&1); then
      echo "could not have its removals done ($(echo "$_da_err" | grep . | tail -n 1))"
      return 3
    fi
  fi
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
# UPPER is then to be thrown away. The deltas are checked (chain_check)
# while the base unpacks; only their results are waited for.
chain_apply() {
  _ca_upper=$1
  _ca_base=$2
  shift 2
  cairn_chain_applied=0
  cairn_chain_dropped=
  cairn_chain_why=
  if ! cairn_chain_why=$(state_check "$_ca_base"); then
    cairn_chain_why="${_ca_base##*/} $cairn_chain_why"
    return 1
  fi
  if ! _ca_dir=$(mktemp -d); then
    cairn_chain_why="${_ca_base##*/} could not be unpacked: no temp file for its check"
    return 1
  fi
  chain_check "$_ca_dir" "$_ca_base" "$@" >"$_ca_dir/checks" &
  _ca_check_pid=$!
  _ca_rc=0
  cairn_chain_why=$(state_unpack "$_ca_base" "$_ca_upper") || _ca_rc=$?
  if [ "$_ca_rc" -ne 0 ]; then
    # Waited for, not killed: a program it started would go on reading
    # the data partition, which the boot unmounts or moves.
    wait "$_ca_check_pid"
    rm -rf "$_ca_dir"
    cairn_chain_why="${_ca_base##*/} $cairn_chain_why"
    return "$_ca_rc"
  fi
  cairn_chain_why=
  wait "$_ca_check_pid"
  chain_extend "$_ca_upper" "$_ca_dir" "$@" 3<"$_ca_dir/checks"
  _ca_rc=$?
  rm -rf "$_ca_dir"
  return "$_ca_rc"
}

# chain_extend UPPER DIR DELTA...: chain_apply's deltas, applied to UPPER,
# which holds the base, by the results of chain_check DIR read on fd 3. A
# delta whose line is missing (its check did not finish) counts as failing
# its check.
chain_extend() {
  _ce_upper=$1
  _ce_dir=$2
  shift 2
  IFS= read -r _ce_line <&3
  cairn_chain_ids=${_ce_line#ok }
  _ce_n=0
  while [ $# -gt 0 ]; do
    _ce_n=$((_ce_n + 1))
    info "applying checkpoint ${1##*/}"
    IFS= read -r _ce_line <&3 || _ce_line="bad could not be checked"
    _ce_rc=1
    case $_ce_line in
      "ok "*)
        _ce_list=$_ce_dir/$_ce_n
        [ -f "$_ce_list" ] || _ce_list=
        # Said through a file: a subshell is a fork per link.
        delta_apply "$_ce_upper" "$1" "$_ce_list" >"$_ce_dir/said"
        _ce_rc=$?
        IFS= read -r _ce_why <"$_ce_dir/said"
        ;;
      *) _ce_why=${_ce_line#bad } ;;
    esac
    if [ "$_ce_rc" -ne 0 ]; then
      cairn_chain_why="${1##*/} $_ce_why"
      # Past a status 3 nothing of this chain is kept: the caller falls back.
      [ "$_ce_rc" -ne 3 ] || return 3
      for _ce_f; do
        cairn_chain_dropped=${cairn_chain_dropped:+$cairn_chain_dropped }${_ce_f##*/}
      done
      warn "$cairn_chain_why: the chain ends before it; dropped: $cairn_chain_dropped"
      return 0
    fi
    cairn_chain_ids=$cairn_chain_ids,${_ce_line#ok }
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
  seal_read "$1" "$CAIRN_DELTA_MAGIC"
  seal_get "$seal_read_fields" chain
  _dh_chain=$seal_got
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
