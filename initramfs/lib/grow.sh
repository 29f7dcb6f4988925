# shellcheck shell=sh
# The data partition grows to fill the stick (DESIGN.md "On the stick"): an
# image written to a larger stick leaves the rest unused until a boot finds
# the partition short of the end. Three steps, each whole by itself:
#
#   1. the GPT's backup copy moves to the end of the stick (sfdisk --relocate);
#   2. the data partition grows to the end (sfdisk -N), before an encrypted
#      one is opened, so that the mapping covers it all (a LUKS2 data
#      segment cairn writes has no fixed size);
#   3. its ext4 grows while mounted (resize2fs, online), which the ext4
#      journal makes safe to cut.
#
# Nothing records how far it got: each boot looks at the table and the file
# system and does what is left, so a power cut between or during steps
# leaves a stick that boots (the kernel reads whichever GPT copy is whole)
# and grows the rest the next time. cairn.grow=0 turns it off.

# Less free space than this after the partition (32 MiB, in 512-byte
# sectors) is not worth a table rewrite: images leave 1 MiB there anyway.
: "${CAIRN_GROW_MIN_SECTORS:=65536}"
# Seconds to wait for the kernel to show the grown partition.
: "${CAIRN_GROW_WAIT:=5}"

# grow_plan DEV: where DEV (/dev/sdb2) lies on its disk, from sysfs. Sets
# grow_disk (/dev/sdb), grow_partno, grow_start, grow_size and grow_disk_size
# (sectors) and returns 0 when DEV is the disk's last partition and at least
# CAIRN_GROW_MIN_SECTORS are free after it; otherwise grow_why says why not.
grow_plan() {
  config_number CAIRN_GROW_MIN_SECTORS 65536
  _gp_sys=$ROOT/sys/class/block/${1##*/}
  if [ ! -r "$_gp_sys/partition" ]; then
    grow_why="$1 is not a partition"
    return 1
  fi
  # The partition's directory in sysfs is inside its disk's.
  _gp_disk_sys=$(cd -P "$_gp_sys/.." && pwd -P) || return 1
  grow_disk=/dev/${_gp_disk_sys##*/}
  grow_partno=$(cat "$_gp_sys/partition")
  grow_start=$(cat "$_gp_sys/start")
  grow_size=$(cat "$_gp_sys/size")
  grow_disk_size=$(cat "$_gp_disk_sys/size")
  for _gp_other in "$_gp_disk_sys"/*/partition; do
    [ -r "$_gp_other" ] || continue
    if [ "$(cat "${_gp_other%/partition}/start")" -gt "$grow_start" ]; then
      _gp_other=${_gp_other%/partition}
      grow_why="${_gp_other##*/} lies after it on $grow_disk"
      return 1
    fi
  done
  # A GPT keeps its backup copy in the last 33 sectors.
  _gp_free=$((grow_disk_size - 34 - grow_start - grow_size))
  if [ "$_gp_free" -lt "$CAIRN_GROW_MIN_SECTORS" ]; then
    grow_why="it already fills $grow_disk"
    return 1
  fi
  return 0
}

# grow_mib SECTORS: SECTORS (512 bytes) in whole MiB.
grow_mib() {
  echo $(($1 / 2048))
}

# data_grow_table DEV: steps 1 and 2 for the data partition DEV, before it
# is opened. Sets cairn_grow_said, the boot record's words. Never fails the
# boot: a stick that cannot grow boots at its old size.
data_grow_table() {
  cairn_grow_said=
  if [ "${cairn_grow:-1}" = 0 ]; then
    cairn_grow_said="off (cairn.grow=0)"
    debug "the data partition is not grown: cairn.grow=0"
    return 0
  fi
  if ! grow_plan "$1"; then
    debug "the data partition is not grown: $grow_why"
    return 0
  fi
  if ! command -v sfdisk >/dev/null 2>&1; then
    cairn_grow_said="not grown (this initramfs has no sfdisk)"
    warn "the data partition $1 could fill $grow_disk, but $cairn_grow_said"
    return 0
  fi
  _dg_from=$(grow_mib "$grow_size")
  _dg_dump=$(LC_ALL=C sfdisk --dump "$ROOT$grow_disk" 2>/dev/null)
  _dg_label=$(echo "$_dg_dump" | sed -n 's/^label: *//p')
  case $_dg_label in
    gpt)
      _dg_last=$(echo "$_dg_dump" | sed -n 's/^last-lba: *//p')
      if [ "${_dg_last:-0}" -lt $((grow_disk_size - 34)) ]; then
        if ! grow_sfdisk "$grow_disk" --relocate gpt-bak-std "$ROOT$grow_disk" </dev/null; then
          cairn_grow_said="not grown (the partition table's backup copy could not be moved)"
          return 0
        fi
        info "moved the partition table's backup copy to the end of $grow_disk"
      fi
      ;;
    dos) ;;
    *)
      cairn_grow_said="not grown (${_dg_label:-no} partition table on $grow_disk)"
      warn "the data partition $1 is $cairn_grow_said"
      return 0
      ;;
  esac
  info "growing the data partition $1 to the end of $grow_disk (${_dg_from} MiB now)"
  if ! echo ', +' | grow_sfdisk "$grow_disk" --no-reread -N "$grow_partno" "$ROOT$grow_disk"; then
    cairn_grow_said="not grown (sfdisk could not grow partition $grow_partno)"
    return 0
  fi
  grow_reread "$1" || return 0
  _dg_to=$(grow_mib "$(cat "$ROOT/sys/class/block/${1##*/}/size")")
  cairn_grow_said="partition grown from $_dg_from MiB to $_dg_to MiB"
  info "the data partition $1 now fills $grow_disk: $_dg_from MiB -> $_dg_to MiB"
}

# grow_sfdisk DISK ARGS...: sfdisk ARGS, its words on the console when it
# fails (and in debug otherwise).
grow_sfdisk() {
  _gs_disk=$1
  shift
  _gs_out=$(LC_ALL=C sfdisk "$@" 2>&1)
  _gs_rc=$?
  if [ "$_gs_rc" -ne 0 ]; then
    warn "sfdisk $* on $_gs_disk failed ($_gs_rc): $(echo "$_gs_out" | tail -n 3 | tr '\n' ' ')"
    return 1
  fi
  debug "sfdisk $*: $(echo "$_gs_out" | tr '\n' ' ')"
}

# grow_reread DEV: have the kernel read the grown table and wait (up to
# CAIRN_GROW_WAIT seconds) for DEV to come back at its new size. Nothing
# holds the disk yet, so the whole table is read again.
grow_reread() {
  config_number CAIRN_GROW_WAIT 5
  _gr_sys=$ROOT/sys/class/block/${1##*/}
  blockdev --rereadpt "$ROOT$grow_disk" 2>/dev/null
  _gr_end=$(($(date +%s) + CAIRN_GROW_WAIT))
  while :; do
    if [ -b "$ROOT$1" ] && [ "$(cat "$_gr_sys/size" 2>/dev/null || echo 0)" -gt "$grow_size" ]; then
      return 0
    fi
    [ "$(date +%s)" -lt "$_gr_end" ] || break
    sleep 0.2 2>/dev/null || sleep 1
  done
  # The table on the stick is grown; this boot goes on at the old size and
  # the next one grows the file system.
  cairn_grow_said="partition grown on $grow_disk; the kernel uses it from the next boot"
  warn "the kernel did not take the grown partition table of $grow_disk: $cairn_grow_said"
  [ -b "$ROOT$1" ]
}

# ext4_field DEV OFFSET BYTES: an unsigned little-endian field of the ext
# superblock on DEV (which starts 1024 bytes in), in decimal.
ext4_field() {
  dd if="$1" bs=1 skip=$((1024 + $2)) count="$3" 2>/dev/null | od -An -tu"$3" | tr -d ' \n'
}

# ext4_bytes DEV: the size of the ext4 on DEV, from its superblock, or
# nothing when DEV holds no ext4.
ext4_bytes() {
  [ "$(ext4_field "$1" 56 2)" = 61267 ] || return 0 # the magic, 0xEF53
  _eb_lo=$(ext4_field "$1" 4 4)
  _eb_log=$(ext4_field "$1" 24 4)
  _eb_hi=0
  # INCOMPAT_64BIT: the block count has a high half.
  [ $(($(ext4_field "$1" 96 4) & 128)) -eq 0 ] || _eb_hi=$(ext4_field "$1" 336 4)
  echo $(((_eb_hi * 4294967296 + _eb_lo) * (1024 << _eb_log)))
}

# data_grow_fs DEV: step 3, once DEV (the mounted data partition, or its
# LUKS mapping) is mounted read-write: its ext4 grows to DEV's size.
data_grow_fs() {
  [ "${cairn_grow:-1}" != 0 ] && [ -z "${cairn_data_ro:-}" ] || return 0
  _df_dev=$(blockdev --getsize64 "$ROOT$1" 2>/dev/null)
  _df_fs=$(ext4_bytes "$ROOT$1")
  [ -n "$_df_dev" ] && [ -n "$_df_fs" ] || return 0
  [ $((_df_dev - _df_fs)) -ge $((CAIRN_GROW_MIN_SECTORS * 512)) ] || return 0
  _df_from=$((_df_fs >> 20))
  _df_to=$((_df_dev >> 20))
  _df_said="file system grown from $_df_from MiB to $_df_to MiB"
  if ! command -v resize2fs >/dev/null 2>&1; then
    _df_said="file system not grown (this initramfs has no resize2fs)"
    warn "the data partition's $_df_said"
  else
    info "growing the file system on $1 from $_df_from MiB to $_df_to MiB"
    if _df_out=$(resize2fs "$ROOT$1" 2>&1); then
      info "the file system on $1 now fills it: $_df_to MiB"
    else
      # Its error is the line it starts with its name, wherever its
      # buffered progress lines landed.
      _df_why=$(echo "$_df_out" | grep '^resize2fs: ' | tail -n 1)
      [ -n "$_df_why" ] || _df_why=$(echo "$_df_out" | tail -n 1)
      _df_said="file system not grown (${_df_why})"
      warn "the data partition's $_df_said"
    fi
  fi
  cairn_grow_said="${cairn_grow_said:+$cairn_grow_said; }$_df_said"
}
