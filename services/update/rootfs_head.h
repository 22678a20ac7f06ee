// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the head of a rootfs payload says about itself, read before a byte of it
// is written: the file system its superblock names and how many bytes that file
// system spans. A signed image can still be wrong for the device (cut short by a
// broken build or copy, or not the file system the slots hold); the kernel would
// find out only at the trial boot, after the slot was written and armed.

#include "mbl/expected.h"

#include <cstdint>
#include <optional>
#include <string>

namespace mbl::update {

struct FileSystemHead {
    std::string type;    // "ext4" (the ext2/3/4 family: one superblock format, one kernel driver)
    std::uint64_t bytes; // what the file system spans: blocks x block size
};

// The file system whose superblock is in head (the payload's first bytes), if
// any known one is. ext2/3/4: the superblock at byte 1024 (magic 0xEF53 at its
// byte 56; s_blocks_count_lo at 4, s_log_block_size at 24, s_feature_incompat
// at 96 with INCOMPAT_64BIT 0x80, s_blocks_count_hi at 336), as the kernel's
// fs/ext4/ext4.h struct ext4_super_block lays it out.
std::optional<FileSystemHead> readFileSystemHead(const std::string& head);

// Refuses a payload that cannot be the slot's file system: InvalidArgument when
// its superblock spans more bytes than the payload has (truncated);
// Incompatible when the slot declares a file system (SlotConfig::filesystem)
// and the payload's head is not one.
Status checkRootfsHead(const std::string& head, std::uint64_t payloadBytes, const std::string& slotName,
                       const std::string& required);

} // namespace mbl::update
