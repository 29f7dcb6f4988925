# shellcheck shell=sh
# The boot record, CAIRN_BOOT_RECORD: what this boot asked for and what it
# did, for the runtime (keys in docs/state-format.md).

# record_write: write the record from the cairn_* variables; the file
# appears whole or not at all.
record_write() {
  _rw_file=$ROOT$CAIRN_BOOT_RECORD
  mkdir -p "${_rw_file%/*}" || return 1
  {
    echo "requested=$cairn_boot"
    echo "used=$cairn_used"
    echo "state_id=$cairn_state_id"
    echo "fallback=$(printf '%s' "$cairn_fallback" | tr '\n' ' ')"
    echo "skipped=$cairn_skipped"
    echo "data_check=$cairn_data_check"
    echo "grow=$cairn_grow_said"
    echo "upper=$cairn_upper_used"
    echo "upper_size=$cairn_upper_bytes"
    echo "kernel=$(kernel_version)"
    echo "session=$(cat "$ROOT/proc/sys/kernel/random/boot_id" 2>/dev/null)"
  } >"$_rw_file.tmp" && mv -f "$_rw_file.tmp" "$_rw_file"
}
