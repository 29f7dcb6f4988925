/**
 * The kernel modules an initramfs carries, by what they are for. Required
 * ones must exist (as a module or built in); optional ones are carried when
 * the kernel has them as modules, since hardware differs from stick to stick.
 * The early boot loads them by name (CAIRN_MODULES in initramfs/lib/config.sh)
 * or by the modalias of the hardware it finds.
 */

/** The boot cannot work without these: the data partition, the images, the overlay. */
export const REQUIRED_MODULES = ['squashfs', 'overlay', 'loop', 'ext4'] as const;

/** Unlocking a LUKS data partition. */
export const LUKS_REQUIRED_MODULES = ['dm-crypt'] as const;

/** What dm-crypt and cryptsetup ask the crypto API for, and a keyboard to type the passphrase on. */
export const LUKS_OPTIONAL_MODULES = [
  'xts', 'aes_generic', 'aesni_intel', 'cbc', 'ecb', 'essiv', 'sha256_generic', 'sha512_generic',
  'af_alg', 'algif_skcipher', 'algif_hash', 'dm-mod',
  'usbhid', 'hid_generic', 'atkbd', 'i8042',
] as const;

export const OPTIONAL_MODULES = [
  // The RAM upper layer (tmpfs when zram is missing) and its compressors.
  'zram', 'zstd', 'lz4', 'lzo-rle', 'lzo',
  // ext4's checksums.
  'crc32c_generic', 'crc32c-intel',
  // The ESP, for tools that mount it.
  'vfat', 'nls_cp437', 'nls_iso8859-1', 'nls_utf8',
  // Virtual machines.
  'virtio_pci', 'virtio_blk', 'virtio_scsi',
  // USB sticks and the controllers they hang on.
  'usb-storage', 'uas', 'xhci_pci', 'xhci_hcd', 'ehci_pci', 'ehci_hcd', 'ohci_pci', 'ohci_hcd', 'uhci_hcd',
  // SCSI disks, SATA, NVMe, SD cards.
  'sd_mod', 'ahci', 'ata_piix', 'ata_generic', 'nvme', 'mmc_block', 'sdhci', 'sdhci_pci', 'sdhci_acpi',
] as const;

export function bootModules(options: { luks: boolean; extra?: readonly string[] }): { required: string[]; optional: string[] } {
  return {
    required: [...REQUIRED_MODULES, ...(options.luks ? LUKS_REQUIRED_MODULES : []), ...(options.extra ?? [])],
    optional: [...OPTIONAL_MODULES, ...(options.luks ? LUKS_OPTIONAL_MODULES : [])],
  };
}
