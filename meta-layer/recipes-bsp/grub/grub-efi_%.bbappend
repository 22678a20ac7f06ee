# SPDX-License-Identifier: Apache-2.0
# A machine with MACHINE_FEATURES "mbl-grub" boots through the project's A/B
# script (services/update/grub/mbl-ab.cfg, mbl-boot-grub): OE-Core's EFI GRUB
# has no module directory on the boot partition, so the modules the script
# uses are built in.
GRUB_BUILDIN:append = "${@bb.utils.contains('MACHINE_FEATURES', 'mbl-grub', ' ' + ' '.join(mbl_layer.boot.GRUB_MODULES), '', d)}"
