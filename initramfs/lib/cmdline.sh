# shellcheck shell=sh
# The kernel command line, read once into cairn_* variables. Nothing in it is
# evaluated: each word is matched with case, and a value that is not one of
# the known forms is replaced by the default, with a message that names both.

# cmdline_defaults: what a boot without cairn.* parameters does.
cmdline_defaults() {
  cairn_boot=default
  cairn_upper=zram
  cairn_upper_size=$CAIRN_UPPER_SIZE_DEFAULT
  cairn_data=LABEL=$CAIRN_LABEL_DATA
  cairn_debug=0
  cairn_grow=1
  cairn_rollback=
  cairn_init=/sbin/init
}

# cmdline_words: the command line on stdin, one parameter a line, split the
# way the kernel splits it: at blanks outside double quotes, quotes removed.
# Parameters after "--" belong to init and are left out.
cmdline_words() {
  awk '{
    n = length($0); w = ""; have = 0; q = 0
    for (i = 1; i <= n + 1; i++) {
      c = (i <= n) ? substr($0, i, 1) : " "
      if (c == "\"") { q = !q; have = 1; continue }
      if (!q && (c == " " || c == "\t")) {
        if (w == "--") exit
        if (have) print w
        w = ""; have = 0; continue
      }
      w = w c; have = 1
    }
  }'
}

# cmdline_parse [FILE]: set cairn_* from FILE (default: the kernel's).
cmdline_parse() {
  cmdline_defaults
  _cp_file=$ROOT${1:-$CAIRN_CMDLINE}
  if ! _cp_words=$(cmdline_words <"$_cp_file"); then
    warn "cannot read the kernel command line ($_cp_file); using the defaults"
    return 0
  fi
  while IFS= read -r _cp_word; do
    [ -z "$_cp_word" ] || cmdline_param "$_cp_word"
  done <<EOF_WORDS
$_cp_words
EOF_WORDS
  debug "cairn.boot=$cairn_boot cairn.upper=$cairn_upper" \
    "cairn.upper_size=$cairn_upper_size cairn.data=$cairn_data" \
    "cairn.grow=$cairn_grow init=$cairn_init"
}

# cmdline_param WORD: one parameter; unknown ones that are not cairn.* are
# the kernel's or init's business and are ignored.
cmdline_param() {
  case $1 in
    cairn.boot=*) cmdline_boot "${1#*=}" ;;
    cairn.upper=*) cmdline_upper "${1#*=}" ;;
    cairn.upper_size=*) cmdline_upper_size "${1#*=}" ;;
    cairn.data=*) cmdline_data "${1#*=}" ;;
    cairn.debug | cairn.debug=*) cmdline_debug "$1" ;;
    cairn.grow=*) cmdline_grow "${1#*=}" ;;
    cairn.rollback=*) cmdline_rollback "${1#*=}" ;;
    init=*) cmdline_init "${1#*=}" ;;
    cairn.boot) cmdline_boot '' ;;
    cairn.upper) cmdline_upper '' ;;
    cairn.upper_size) cmdline_upper_size '' ;;
    cairn.data) cmdline_data '' ;;
    cairn.*) warn "unknown parameter $1 ignored" ;;
  esac
}

cmdline_boot() {
  case $1 in
    default | backup | clean)
      cairn_boot=$1
      return 0
      ;;
    gen-[1-9]*)
      case ${1#gen-} in
        *[!0-9]*) ;;
        *)
          cairn_boot=$1
          return 0
          ;;
      esac
      ;;
  esac
  warn "cairn.boot=$1 is not default, backup, clean or gen-<n>; using default"
  cairn_boot=default
}

cmdline_upper() {
  case $1 in
    zram | tmpfs) cairn_upper=$1 ;;
    *)
      warn "cairn.upper=$1 is not zram or tmpfs; using zram"
      cairn_upper=zram
      ;;
  esac
}

cmdline_upper_size() {
  # 100 bytes of RAM is enough to check the form of a percentage.
  if size_bytes "$1" 100 >/dev/null; then
    cairn_upper_size=$1
  else
    warn "cairn.upper_size=$1 is not a size like 512M, 2G or 50%;" \
      "using $CAIRN_UPPER_SIZE_DEFAULT"
    cairn_upper_size=$CAIRN_UPPER_SIZE_DEFAULT
  fi
}

cmdline_data() {
  case $1 in
    LABEL=?* | UUID=?* | /dev/?*) cairn_data=$1 ;;
    *)
      warn "cairn.data=$1 is not LABEL=..., UUID=... or /dev/...;" \
        "using LABEL=$CAIRN_LABEL_DATA"
      cairn_data=LABEL=$CAIRN_LABEL_DATA
      ;;
  esac
}

cmdline_debug() {
  case $1 in
    cairn.debug | cairn.debug=1) cairn_debug=1 ;;
    cairn.debug=0) cairn_debug=0 ;;
    *)
      warn "$1 is not cairn.debug=1; using cairn.debug=0"
      cairn_debug=0
      ;;
  esac
}

cmdline_grow() {
  case $1 in
    0 | 1) cairn_grow=$1 ;;
    *)
      warn "cairn.grow=$1 is not 0 or 1; using 1 (the data partition grows to fill the stick)"
      cairn_grow=1
      ;;
  esac
}

# cmdline_rollback WHAT: GRUB's boot counting rolled WHAT back (docs/boot.md):
# `state` comes with cairn.boot=backup once the newest state has used its
# tries, and the boot is then a fallback from the newest (state.sh).
cmdline_rollback() {
  case $1 in
    state) cairn_rollback=$1 ;;
    *)
      warn "cairn.rollback=$1 is not state; ignored"
      cairn_rollback=
      ;;
  esac
}

cmdline_init() {
  case $1 in
    /?*) cairn_init=$1 ;;
    *)
      warn "init=$1 is not an absolute path; using /sbin/init"
      cairn_init=/sbin/init
      ;;
  esac
}
