# shellcheck shell=sh
# Names and paths shared with the cairn runtime (src/names.ts).
# A unit test checks that both files agree: change them together.

CAIRN_ROOTFS=rootfs.squashfs
CAIRN_FIRMWARE=firmware.squashfs
CAIRN_NEWEST=upperfs.squashfs
CAIRN_BACKUP=upperfs-backup.squashfs
CAIRN_GENERATION_PREFIX=upperfs-gen-
CAIRN_STATE_SUFFIX=.squashfs
# Every link of every checkpoint chain: $CAIRN_CHECKPOINTS/<id>$CAIRN_STATE_SUFFIX.
CAIRN_CHECKPOINTS=checkpoints
CAIRN_TEMP=upperfs.squashfs.tmp
CAIRN_BACKUP_NEXT=upperfs-backup.squashfs.next
CAIRN_SAVE_LOCK=.cairn-save.lock
CAIRN_SAVE_LOCK_OWNER=.cairn-save.owner
CAIRN_SAVE_FAILED=.cairn-save-failed
CAIRN_USER_DIR=user
CAIRN_SWAPFILE=swapfile

# Octal modes (src/names.ts MODES): the data partition's root, and each saved state.
CAIRN_DATA_ROOT_MODE=711
CAIRN_STATE_MODE=600

CAIRN_LABEL_DATA=cairn-data
CAIRN_LABEL_ESP=CAIRN-ESP

CAIRN_RUN_DIR=/run/cairn
CAIRN_BOOT_RECORD=/run/cairn/boot
CAIRN_UPPER_MOUNT=/run/cairn/rw
CAIRN_UPPER_DIR=/run/cairn/rw/upper
CAIRN_WORK_DIR=/run/cairn/rw/work
CAIRN_LOWER_DIR=/run/cairn/lower
CAIRN_DATA_DIR=/persist

CAIRN_SEAL_SIZE=4096
CAIRN_SEAL_MAGIC='cairn-state 1'
# A checkpoint delta's seal (lib/chain.sh): a magic an older initramfs does not know.
CAIRN_DELTA_MAGIC='cairn-delta 1'
# What cksum prints for the whole file of a state whose seal has cksum_fix.
CAIRN_SEAL_CKSUM=0

# What a save records at the root of a state (src/names.ts STATE): the POSIX
# ACLs, and the sparse files too large to squash as they are.
CAIRN_ACL_DUMP=.cairn-acls
CAIRN_SPARSE_DIR=.cairn-sparse

# The kernel modules image: modules-<kver>.squashfs (src/names.ts modulesImage).
CAIRN_MODULES_PREFIX=modules-
CAIRN_MODULES_SUFFIX=.squashfs
