// SPDX-License-Identifier: Apache-2.0
#include "rootfs_head.h"

namespace mbl::update {

namespace {

std::uint32_t le32(const std::string& s, std::size_t at)
{
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) {
        v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
    }
    return v;
}

std::uint16_t le16(const std::string& s, std::size_t at)
{
    return static_cast<std::uint16_t>(static_cast<unsigned char>(s[at]) |
                                      (static_cast<unsigned>(static_cast<unsigned char>(s[at + 1])) << 8));
}

constexpr std::size_t kExtSuper = 1024;
constexpr std::size_t kExtSuperBytes = 1024;
constexpr std::uint16_t kExtMagic = 0xEF53;
constexpr std::uint32_t kExtIncompat64Bit = 0x80;

} // namespace

std::optional<FileSystemHead> readFileSystemHead(const std::string& head)
{
    if (head.size() < kExtSuper + kExtSuperBytes || le16(head, kExtSuper + 56) != kExtMagic) {
        return std::nullopt;
    }
    const std::uint32_t logBlock = le32(head, kExtSuper + 24);
    if (logBlock > 6) { // blocks of 1 KiB << 0..6 (64 KiB), as the kernel accepts
        return std::nullopt;
    }
    std::uint64_t blocks = le32(head, kExtSuper + 4);
    if ((le32(head, kExtSuper + 96) & kExtIncompat64Bit) != 0) {
        blocks |= static_cast<std::uint64_t>(le32(head, kExtSuper + 336)) << 32;
    }
    const std::uint64_t blockBytes = std::uint64_t{1024} << logBlock;
    if (blocks > UINT64_MAX / blockBytes) {
        return std::nullopt;
    }
    return FileSystemHead{"ext4", blocks * blockBytes};
}

Status checkRootfsHead(const std::string& head, std::uint64_t payloadBytes, const std::string& slotName,
                       const std::string& required)
{
    const auto fs = readFileSystemHead(head);
    if (!required.empty() && (!fs || fs->type != required)) {
        return unexpected(ErrorCode::Incompatible, "the rootfs payload is not an " + required +
                                                       " file system (no " + required + " superblock at its head), "
                                                       "and slot " + slotName + " holds " + required);
    }
    if (fs && fs->bytes > payloadBytes) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the rootfs payload is truncated: its " + fs->type + " file system spans " +
                              std::to_string(fs->bytes) + " bytes, the payload has " + std::to_string(payloadBytes));
    }
    return {};
}

} // namespace mbl::update
