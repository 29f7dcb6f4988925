# shellcheck shell=sh
# Sizes: cairn.upper_size and the amounts of RAM and space they are set
# against. Sizes are whole bytes; busybox sh computes in 64 bits.

# size_bytes SPEC MEM: print SPEC in bytes. SPEC is a number of bytes, a
# number with a K, M, G or T suffix (powers of 1024), or a percentage (1 to
# 100) of MEM bytes. Anything else, or a value too long to compute, fails.
size_bytes() {
  _sb_num=${1%[KkMmGgTt%]}
  _sb_unit=${1#"$_sb_num"}
  case $_sb_num in
    '' | 0* | *[!0-9]*) return 1 ;;
  esac
  # Each unit's multiplier and the longest number that still fits in 63 bits.
  case $_sb_unit in
    '') set -- "$2" 1 18 ;;
    [Kk]) set -- "$2" 1024 15 ;;
    [Mm]) set -- "$2" 1048576 12 ;;
    [Gg]) set -- "$2" 1073741824 9 ;;
    [Tt]) set -- "$2" 1099511627776 6 ;;
    %)
      case $2 in
        '' | *[!0-9]*) return 1 ;;
      esac
      [ "${#_sb_num}" -le 3 ] && [ "$_sb_num" -le 100 ] || return 1
      echo $(($2 * _sb_num / 100))
      return 0
      ;;
  esac
  [ "${#_sb_num}" -le "$3" ] || return 1
  echo $((_sb_num * $2))
}

# mem_total_bytes: the machine's RAM, from /proc/meminfo.
mem_total_bytes() {
  _mt_kb=$(awk '$1 == "MemTotal:" { print $2; exit }' "$ROOT/proc/meminfo" 2>/dev/null)
  case $_mt_kb in
    '' | *[!0-9]*) return 1 ;;
  esac
  echo $((_mt_kb * 1024))
}

# fs_free_bytes DIR: the space left on the file system holding DIR.
fs_free_bytes() {
  set -- "$1" "$(stat -f -c '%f %S' "$1" 2>/dev/null)"
  case $2 in
    *[0-9]' '[0-9]*) echo $((${2% *} * ${2#* })) ;;
    *) return 1 ;;
  esac
}

# mib BYTES: BYTES in whole MiB, for messages.
mib() { echo $(($1 / 1048576)); }
