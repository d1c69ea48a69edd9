#!/bin/bash
# Build the small Debian box used by labkit's Vagrant end-to-end test (vagrant-libvirt, direct kernel boot).
#
#   build.sh OUT_DIR SUITE MIRROR INSECURE_PUBKEY [DEB_CACHE_DIR [FINAL_DIR]]
#
# Writes into OUT_DIR: box.img (qcow2, an ext4 filesystem with no partition table: the kernel is booted
# directly by qemu), vmlinuz, initrd.img, box/ (metadata.json, box.img, Vagrantfile: the .box contents),
# and packages.txt (what the image holds). FINAL_DIR (default OUT_DIR) is where OUT_DIR will be moved: the
# box's Vagrantfile names the kernel and initrd there. Needs root, debootstrap, mkfs.ext4 (e2fsprogs >= 1.43), qemu-img.
# The guest: systemd, systemd-networkd (DHCP on eth0, the management NIC; Vagrant configures the others),
# sshd (host keys made at first boot), the `vagrant` user (password-less sudo, Vagrant's insecure key,
# which Vagrant replaces at first `up`), python3 without venv/pip (labkit brings pip in its wheelhouse), iproute2, iperf3,
# ping, ethtool, tcpdump, nftables, and the Debian kernel (which has sch_netem).
set -euo pipefail

OUT=${1:?OUT_DIR}; SUITE=${2:?SUITE}; MIRROR=${3:?MIRROR}; PUBKEY=${4:?INSECURE_PUBKEY}; DEBCACHE=${5:-}
FINAL=${6:-$OUT}
SIZE_MB=${LABKIT_BOX_SIZE_MB:-2048}

step() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }

ROOT="$OUT/root"
rm -rf "$OUT"; mkdir -p "$OUT" "$ROOT"
[ -n "$DEBCACHE" ] && mkdir -p "$DEBCACHE"

step "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase ${DEBCACHE:+--cache-dir="$DEBCACHE"} \
  --include=systemd-sysv,udev,kmod,dbus,openssh-server,sudo,python3,iproute2,iputils-ping,iperf3,procps,ethtool,tcpdump,nftables,ca-certificates \
  "$SUITE" "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 || { tail -20 "$OUT/debootstrap.log"; exit 1; }

step "configure the guest"
echo labkit-box >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 labkit-box\n' >"$ROOT/etc/hosts"
printf '/dev/vda / ext4 defaults,noatime 0 1\n' >"$ROOT/etc/fstab"
# initramfs with only what a virtio guest needs: small and quick to unpack under software emulation
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
echo 'MODULES=list' >"$ROOT/etc/initramfs-tools/conf.d/labkit"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >>"$ROOT/etc/initramfs-tools/modules"
# the management NIC (eth0, kernel names: net.ifnames=0) gets DHCP; Vagrant writes the data NICs' files
mkdir -p "$ROOT/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n[DHCPv4]\nClientIdentifier=mac\n' \
  >"$ROOT/etc/systemd/network/90-labkit-mgmt.network"
# the user Vagrant logs in as
chroot "$ROOT" useradd -m -s /bin/bash -U vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/vagrant"; chmod 0440 "$ROOT/etc/sudoers.d/vagrant"
install -d -m 0700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$PUBKEY" "$ROOT/home/vagrant/.ssh/authorized_keys"
# sshd: host keys made at first boot, so no two VMs share them
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat >"$ROOT/etc/systemd/system/labkit-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Make sshd host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
printf 'UseDNS no\nPasswordAuthentication no\n' >"$ROOT/etc/ssh/sshd_config.d/labkit.conf"
chroot "$ROOT" systemctl enable systemd-networkd.service labkit-ssh-hostkeys.service ssh.service >/dev/null 2>&1
# nothing that waits for a network that will never come, nor timers that wake up for apt
chroot "$ROOT" systemctl disable systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  >/dev/null 2>&1 || true
chroot "$ROOT" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true

step "kernel"
mount -t proc proc "$ROOT/proc"; trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
[ -n "$DEBCACHE" ] && mount --bind "$DEBCACHE" "$ROOT/var/cache/apt/archives"
set +e
DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -q --no-install-recommends linux-image-amd64 \
  >"$OUT/kernel.log" 2>&1
rc=$?
set -e
[ -n "$DEBCACHE" ] && umount "$ROOT/var/cache/apt/archives"
[ $rc -eq 0 ] || { tail -20 "$OUT/kernel.log"; exit 1; }
umount "$ROOT/proc"; trap - EXIT
rm -f "$ROOT/etc/resolv.conf"
# drop drivers no virtio guest uses (the image shrinks by half); keep net/, fs/, virtio, block
KVER=$(basename "$(ls -d "$ROOT"/lib/modules/*)")
for d in drivers/gpu drivers/media drivers/infiniband drivers/net/wireless drivers/net/ethernet drivers/staging \
         drivers/scsi drivers/usb drivers/bluetooth drivers/iio drivers/input drivers/hid drivers/isdn \
         drivers/net/can sound net/wireless net/mac80211 net/bluetooth; do
  rm -rf "$ROOT/lib/modules/$KVER/kernel/$d"
done
chroot "$ROOT" depmod "$KVER"
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$OUT/initrd.img"
chmod 0644 "$OUT/vmlinuz" "$OUT/initrd.img"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
chroot "$ROOT" dpkg-query -W -f '${Package} ${Version}\n' >"$OUT/packages.txt"
# made at first boot, so every VM has its own (package scripts above may have written one)
: >"$ROOT/etc/machine-id"; rm -f "$ROOT/var/lib/dbus/machine-id"; ln -sf /etc/machine-id "$ROOT/var/lib/dbus/machine-id"
echo "$KVER" >"$OUT/kernel-version.txt"

step "filesystem image (${SIZE_MB} MiB ext4, no partition table)"
mkfs.ext4 -q -L labkit-root -d "$ROOT" "$OUT/root.raw" "${SIZE_MB}M"
mkdir -p "$OUT/box"
qemu-img convert -f raw -O qcow2 "$OUT/root.raw" "$OUT/box/box.img"
rm -f "$OUT/root.raw"; rm -rf "$ROOT"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' $(( (SIZE_MB + 1023) / 1024 )) \
  >"$OUT/box/metadata.json"
# The box carries its own boot settings: qemu loads the kernel and initrd kept beside the box in FINAL_DIR.
cat >"$OUT/box/Vagrantfile" <<VF
# labkit's test box: a debootstrapped Debian $SUITE booted directly from its kernel ($(cat "$OUT/kernel-version.txt")).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = "$FINAL/vmlinuz"
    libvirt.initrd = "$FINAL/initrd.img"
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
    libvirt.graphics_type = "none"
    libvirt.video_type = "none"
  end
end
VF
step "box"
tar -C "$OUT/box" -cf "$OUT/labkit-test.box" metadata.json Vagrantfile box.img
rm -rf "$OUT/box"
du -sh "$OUT"/* | sed 's/^/  /'
step "done"
