# SPDX-License-Identifier: Apache-2.0
SUMMARY = "The MBL storage layout on the device and the update service's configuration"
DESCRIPTION = "/etc/mbl/update.json (the A/B slots, the bootloader and its \
environment on the boot partition), /etc/fw_env.config for U-Boot, and the \
data partition's folders and bind mounts (/var/lib/mbl, /var/log/mbl) enabled. \
Generated from layout/partitions.conf (MBL_LAYOUT), the machine's partition \
prefix (MBL_PARTITION_PREFIX) and its boot integration (MACHINE_FEATURES \
mbl-grub or mbl-uboot). The fstab lines of the boot and data partitions are \
written by mbl-ab-image.bbclass (/etc/fstab belongs to base-files)."
SECTION = "admin"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${MBL_SOURCE_DIR}/LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

inherit mbl-boot-config
# Depends on the machine's layout and bootloader.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# What a device maker sets (machine, distro, local.conf or a bbappend):
#   MBL_COMPATIBLE        device class bundles must name (default: MACHINE)
#   MBL_FACTORY_VERSION   firmware version of the image before any update
#   MBL_TRUST_CERTS       the CA certificates (PEM files on the build host) the
#                         update service trusts to sign bundles: your firmware
#                         signing CA, never its key
MBL_FACTORY_VERSION ?= "${DISTRO_VERSION}"
MBL_TRUST_CERTS ?= ""

FILESEXTRAPATHS:prepend := "${@os.path.dirname(d.getVar('MBL_LAYOUT'))}:"
SRC_URI = "file://${@os.path.basename(d.getVar('MBL_LAYOUT'))}"
S = "${WORKDIR}"
do_configure[noexec] = "1"
do_compile[noexec] = "1"

# systemd refuses a mount point under a symlink, and with VOLATILE_LOG_DIR
# (OE-Core's default) /var/log links to /var/volatile/log: the project's
# var-log-mbl.mount cannot work there, so this recipe binds the log folder on
# its real path instead.
MBL_LOG_BIND = "${@'${localstatedir}/volatile/log/mbl' if oe.types.boolean(d.getVar('VOLATILE_LOG_DIR')) else ''}"

python () {
    if not d.getVar('MBL_BOOTLOADER'):
        raise bb.parse.SkipRecipe('MACHINE_FEATURES has neither "mbl-grub" nor "mbl-uboot" (the boot integration; see the meta-mbl README)')
    if not d.getVar('MBL_PARTITION_PREFIX'):
        raise bb.parse.SkipRecipe('MBL_PARTITION_PREFIX is not set (e.g. "/dev/mmcblk0p": the slots are that followed by their index in layout/partitions.conf)')
}

python do_install () {
    import os
    D = d.getVar('D')
    parts = mbl_layer.layout.read_partitions(os.path.join(d.getVar('WORKDIR'), os.path.basename(d.getVar('MBL_LAYOUT'))))
    data = mbl_layer.layout.role(parts, 'data')[0]['mountpoint']
    boot = mbl_layer.layout.role(parts, 'boot')[0]['mountpoint']

    def write(path, text, mode=0o644):
        bb.utils.mkdirhier(os.path.dirname(D + path))
        with open(D + path, 'w') as f:
            f.write(text)
        os.chmod(D + path, mode)

    confdir = d.getVar('sysconfdir')
    loader = d.getVar('MBL_BOOTLOADER')
    defaults = None
    if loader == 'uboot':
        env_path = confdir + '/fw_env.config'
        size = d.getVar('MBL_UBOOT_ENV_SIZE')
        write(env_path, '# meta-mbl: the redundant U-Boot environment the A/B boot script reads and\n'
                        '# writes (two files on the boot partition; mbl-boot-uboot): fw_setenv writes\n'
                        '# the copy that is not current, so a power cut leaves the other one valid.\n'
                        '%s 0x0 %s\n%s 0x0 %s\n' % (d.getVar('MBL_BOOT_ENV_PATH'), size,
                                                    d.getVar('MBL_BOOT_ENV_REDUND_PATH'), size))
        # fw_setenv needs a default environment to write a blank one.
        defaults = confdir + '/mbl/uboot-env.defaults'
        write(defaults, mbl_layer.layout.env_text(mbl_layer.layout.initial_env(parts)))
    else:
        env_path = d.getVar('MBL_BOOT_ENV_PATH')
    write(confdir + '/mbl/update.json',
          mbl_layer.layout.update_json(parts, d.getVar('MBL_PARTITION_PREFIX'), d.getVar('MBL_COMPATIBLE'), loader,
                                       env_path, d.getVar('MBL_FACTORY_VERSION'), defaults))

    # The firmware signing CAs (update.json trustDir default: /etc/mbl/trust).
    certs = (d.getVar('MBL_TRUST_CERTS') or '').split()
    for cert in certs:
        if not os.path.isfile(cert):
            bb.fatal('MBL_TRUST_CERTS: %s does not exist' % cert)
        with open(cert) as f:
            text = f.read()
        if '-----BEGIN CERTIFICATE-----' not in text:
            bb.fatal('MBL_TRUST_CERTS: %s is not a PEM certificate' % cert)
        write(confdir + '/mbl/trust/' + os.path.basename(cert), text)
    if not certs:
        bb.warn('MBL_TRUST_CERTS is empty: the image trusts no bundle signer and refuses every update')

    unitdir = d.getVar('systemd_system_unitdir')
    # The data partition's folders and bind mounts are the project's units
    # (services/systemd: mbl-data-layout.service, var-lib-mbl.mount,
    # var-log-mbl.mount), installed but not enabled: this image has the data
    # partition, so enable them (systemctl preset-all runs at image time).
    enable = ['mbl-data-layout.service', 'var-lib-mbl.mount']
    log_bind = d.getVar('MBL_LOG_BIND')
    if log_bind:
        name = mbl_layer.layout.unit_name(log_bind) + '.mount'
        write(unitdir + '/' + name, '\n'.join([
            '# meta-mbl: /var/log/mbl on the data partition, as var-log-mbl.mount, on the',
            '# real path of /var/log (a link to /var/volatile/log: VOLATILE_LOG_DIR).',
            '[Unit]',
            'Description=MBL logs on the data partition (/var/log/mbl)',
            'DefaultDependencies=no',
            'Requires=mbl-data-layout.service',
            'After=mbl-data-layout.service',
            'RequiresMountsFor=%s %s' % (data, os.path.dirname(log_bind)),
            'Conflicts=umount.target',
            'Before=umount.target local-fs.target',
            '',
            '[Mount]',
            'What=%s/mbl/log' % data.rstrip('/'),
            'Where=%s' % log_bind,
            'Type=none',
            'Options=bind',
            '',
            '[Install]',
            'WantedBy=local-fs.target',
            '']))
        enable.append(name)
    else:
        enable.append('var-log-mbl.mount')
    write(d.getVar('systemd_unitdir') + '/system-preset/80-mbl-storage.preset',
          '# meta-mbl: the data partition of layout/partitions.conf.\n' +
          ''.join('enable %s\n' % u for u in enable))
    # On a read-only root file system /var/lib is a volatile bind
    # (volatile-binds): /var/lib/mbl goes on top of it, not under it.
    write(unitdir + '/var-lib-mbl.mount.d/mbl-volatile.conf',
          '# meta-mbl: after the volatile /var/lib of a read-only root file system.\n'
          '[Unit]\nAfter=var-volatile-lib.service\n')
    # mbl-update writes the bootloader environment on the boot partition.
    write(unitdir + '/mbl-update.service.d/mbl-boot.conf',
          '# meta-mbl: the bootloader environment is on the boot partition.\n'
          '[Unit]\nRequiresMountsFor=%s\n' % boot)
    # Mount points on the read-only root file system.
    for p in parts:
        if p['role'] != 'rootfs':
            bb.utils.mkdirhier(D + p['mountpoint'])
}
do_install[file-checksums] += "${@' '.join('%s:True' % c for c in (d.getVar('MBL_TRUST_CERTS') or '').split())}"
do_install[vardeps] += "MBL_TRUST_CERTS MBL_COMPATIBLE MBL_BOOTLOADER MBL_BOOT_ENV_PATH MBL_BOOT_ENV_REDUND_PATH MBL_UBOOT_ENV_SIZE MBL_FACTORY_VERSION \
                        MBL_LOG_BIND MBL_PARTITION_PREFIX"

FILES:${PN} = " \
    ${systemd_unitdir} \
    ${sysconfdir}/mbl \
    ${sysconfdir}/fw_env.config \
    ${@' '.join(p['mountpoint'] for p in mbl_layout(d) if p['role'] != 'rootfs')} \
"
CONFFILES:${PN} = "${sysconfdir}/mbl/update.json"
# The units it enables are the project's; the tool the update service runs
# to write the bootloader environment.
RDEPENDS:${PN} = "mbl-device-services ${@'libubootenv-bin' if d.getVar('MBL_BOOTLOADER') == 'uboot' else 'grub-editenv'}"
