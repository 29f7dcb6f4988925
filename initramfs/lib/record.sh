# shellcheck shell=sh
# The boot record, CAIRN_BOOT_RECORD: what this boot asked for and what it
# did, for the runtime (keys in docs/state-format.md).

# record_write: write the record from the cairn_* variables; the file
# appears whole or not at all. It runs once the upper layer is filled and
# before anything of the user's runs: unpacked_at (wall clock, seconds) and
# unpacked_uptime (seconds since boot, which no clock setting moves) date
# the unpack's end for `cairn diff` (src/changes/baseline.ts).
record_write() {
  _rw_file=$ROOT$CAIRN_BOOT_RECORD
  mkdir -p "${_rw_file%/*}" || return 1
  _rw_uptime=
  { read -r _rw_uptime _ <"$ROOT/proc/uptime"; } 2>/dev/null
  {
    echo "requested=$cairn_boot"
    echo "used=$cairn_used"
    echo "state_id=$cairn_state_id"
    echo "fallback=$(printf '%s' "$cairn_fallback" | tr '\n' ' ')"
    echo "skipped=$cairn_skipped"
    echo "chain=${cairn_chain_applied:-0}"
    echo "chain_dropped=$cairn_chain_dropped"
    echo "data_check=$cairn_data_check"
    echo "grow=$cairn_grow_said"
    echo "rollback=$cairn_rollback"
    echo "upper=$cairn_upper_used"
    echo "upper_size=$cairn_upper_bytes"
    echo "unpacked_at=$(date +%s)"
    echo "unpacked_uptime=$_rw_uptime"
    echo "kernel=$(kernel_version)"
    echo "session=$(cat "$ROOT/proc/sys/kernel/random/boot_id" 2>/dev/null)"
  } >"$_rw_file.tmp" && mv -f "$_rw_file.tmp" "$_rw_file"
}
