// SPDX-License-Identifier: Apache-2.0
#pragma once
// The QEMU device of tests/device: a real PC (qemu-system-x86_64, TCG) booting
// the image of build-image.sh through a real bootloader (GRUB from SeaBIOS, or
// Debian's U-Boot qemu-x86 ROM as the firmware), with
//   - a qcow2 overlay per machine over the cached raw base (the base is never
//     written), as a virtio disk with cache=writeback: the guest's flushes
//     reach QEMU, which writes its qcow2 metadata and fdatasyncs the overlay,
//     so whatever the guest fsynced is on the host when QEMU is SIGKILLed (a
//     power cut); writes the guest never flushed may or may not survive, as on
//     a disk with a volatile cache. (cache=unsafe would drop the flushes.)
//   - the serial console appended to a file (console.log) across reboots;
//   - user-mode networking with restrict=on: the guest reaches nothing but
//     10.0.2.100:443, forwarded (guestfwd, one socat per connection) to the
//     DDI server's nginx on the host's loopback;
//   - the i6300esb watchdog (-action watchdog=reset) that systemd feeds;
//   - swtpm as a TPM 2.0 (tpm-tis), state kept across power cycles;
//   - the QEMU guest agent on a virtio serial port: the tests' way to run
//     commands in the guest (no network, no shell on the console);
//   - QMP, through which the machine learns why QEMU stopped.
// A guest reset (reboot, watchdog, firmware `reset`) does not reset the
// machine inside the same QEMU process: under TCG that warm reset sometimes
// hangs for good after "reboot: Restarting system" (a known QEMU fault,
// kubevirt/kubevirt#6885 and #8999; seen here 2 times in 6 reboots). QEMU runs
// with -action reboot=shutdown instead, and a supervisor thread that reads its
// QMP events starts a new QEMU (and swtpm) on the same disk overlay and TPM
// state when the SHUTDOWN event says "guest-reset": for the guest this is a
// reset (the firmware and bootloader run again, the disk keeps what QEMU
// wrote), and running() stays true across it. A guest poweroff
// ("guest-shutdown") ends the machine. kill() is a power cut; start() after
// it a cold boot.

#include "harness.h"

#include "mbl/process.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mbl::test::device {

enum class Bootloader { Grub, Uboot };
const char* name(Bootloader b);

// What build-image.sh made (cached under /var/cache/mbl-device).
struct Image {
    Bootloader bootloader = Bootloader::Grub;
    std::string disk;   // raw base image, read-only
    std::string rootfs; // the slot image (ext4), for firmware bundles
    std::string pki;    // firmware signing PKI: ca.pem, int.pem, signer.pem/.key
    std::string build;  // the release build installed in the image
};
// Runs build-image.sh (skips the test, exit 77, when it cannot build here).
Image buildImage(Bootloader b);

struct ExecResult {
    int code = -1; // exit code, or 128 + signal
    std::string out, err;
    bool ok() const { return code == 0; }
};

class Machine {
public:
    // cloudPort: the host's nginx port the guest reaches at 10.0.2.100:443 (0: none).
    Machine(const Image& image, const std::string& dir, int cloudPort);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // A second disk from the next start() on (read-only, /dev/vdb in the
    // guest): a "USB stick" for a local install. "" removes it.
    void attachStick(const std::string& rawImage) { stick_ = rawImage; }
    // Power on (a cold boot): swtpm, then QEMU.
    void start();
    // Power cut: SIGKILL QEMU (swtpm ends with it).
    void kill();
    // Orderly: poweroff in the guest, wait for QEMU to exit (kill after timeout).
    void powerOff(std::chrono::seconds timeout = std::chrono::seconds(90));
    // Powered on: from start() until kill(), a guest poweroff, or QEMU ending
    // for any reason but a guest reset.
    bool running();
    // Guest resets since the machine was made (each one a new QEMU), and how
    // many of them the watchdog caused (QMP's WATCHDOG event).
    int resets() const;
    int watchdogResets() const;

    // The guest agent answers (the guest is up to basic.target at least).
    bool waitAgent(std::chrono::seconds timeout);
    // Runs /bin/sh -c script in the guest as root, stdin from `input`.
    // code -1 with err set when the agent did not answer.
    ExecResult sh(const std::string& script, std::chrono::seconds timeout = std::chrono::seconds(120),
                  const std::string& input = "");
    // Copies a host file into the guest (through the agent).
    bool push(const std::string& hostPath, const std::string& guestPath);
    // The guest's boot id (/proc/sys/kernel/random/boot_id), "" if unreachable.
    std::string bootId();
    // Waits until `systemctl is-system-running --wait` ends (running or degraded);
    // returns its answer ("" on timeout).
    std::string waitBooted(std::chrono::seconds timeout);
    // Waits for a guest boot whose boot id differs from `previous`.
    bool waitNewBoot(const std::string& previous, std::chrono::seconds timeout);

    // Serial console, everything since the machine was made.
    std::string console() const;
    // How many times the bootloader chose a slot (its console line), and the
    // slot of each choice in order ("A", "B", "" for none).
    std::vector<std::string> bootChoices() const;
    // Waits until the console holds `text` at or after byte offset `from`.
    bool waitConsole(const std::string& text, std::size_t from, std::chrono::seconds timeout) const;
    std::size_t consoleSize() const;
    // Copies every new console line to stdout ("console| ..."), from now on
    // until the machine is destroyed (the demo shows the serial console).
    void echoConsole();

    const std::string& dir() const { return dir_; }
    const std::string& overlay() const { return overlay_; }
    Bootloader bootloader() const { return image_.bootloader; }

private:
    std::optional<std::string> agent(const std::string& requestJson, std::chrono::milliseconds timeout);
    // swtpm, then QEMU (paused), then QMP negotiated and the guest let run.
    // Returns the QMP socket. Needs mu_.
    int powerOnLocked();
    // Stops QEMU and swtpm (SIGKILL). Needs mu_.
    void killLocked();
    // Reads QMP events until QEMU ends, then starts a new QEMU after a guest
    // reset or marks the machine off (owns the reset-or-off decision).
    void supervise(int qmpFd);
    void hostLog(const std::string& line);
    Image image_;
    std::string dir_, overlay_, consolePath_, qgaPath_, qmpPath_, tpmDir_;
    int cloudPort_ = 0;
    std::string stick_;
    mutable std::mutex mu_; // guards qemu_, swtpm_, powered_ and the counters
    Child qemu_;
    Child swtpm_;
    bool powered_ = false;
    int resets_ = 0;
    int watchdogResets_ = 0;
    std::thread supervisor_;
    std::atomic<bool> stopEcho_{false};
    std::thread echo_;
};

// Seconds since `t0`, one decimal.
std::string secondsSince(std::chrono::steady_clock::time_point t0);

} // namespace mbl::test::device
