#pragma once
// Writing a rootfs payload to a slot device: the streaming pipeline (hashed as
// it passes, O_DIRECT writes, every range read back and compared), a slot's
// capacity, and the wipe of a slot that holds a partial or refused image.

#include "boot_policy.h"
#include "bundle.h"

#include "mbl/expected.h"

#include <cstdint>
#include <functional>
#include <string>

namespace mbl::update {

struct SlotWriteOptions {
    bool readBack = true;  // read every written range back from the medium and compare it
    bool noDirect = false; // test hook: the path for media that refuse O_DIRECT
    // Called once with the first bytes of the payload (kHeadBytes, or all of a
    // smaller payload) before anything is written: an error stops the write with
    // the slot untouched. This is where the slot is claimed.
    std::function<Status(const std::string& head)> beforeFirstWrite;
    std::function<void(std::uint64_t bytes)> advanced;
    std::function<void(const char* point)> pause;
};
inline constexpr std::size_t kHeadBytes = 64u << 10;

// Streams one rootfs payload from the reader into the slot; checks its size and
// SHA-256 against the manifest (SignatureInvalid) and what the medium returns
// (Io); fsyncs. Not armed: that is the boot policy's.
Status writeRootfs(bundle::Reader& r, const bundle::Payload& p, const SlotConfig& target, const SlotWriteOptions& o);

// Bytes the slot can hold: a block device's size (capped by the configured
// size), an image file's configured size or current size.
Expected<std::uint64_t> slotCapacity(const SlotConfig& s);

// Zeroes the first MiB of a slot, so no file system or kernel header of a
// partial, refused or released image survives to be mounted or booted by hand.
Status wipeSlotHead(const SlotConfig& s);

} // namespace mbl::update
