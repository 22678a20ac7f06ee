// SPDX-License-Identifier: Apache-2.0
#pragma once
// Safe unpacking of tar streams (OCI layers, bundle rootfs entries) into a
// root directory. Every path is resolved one component at a time under a
// directory fd with O_NOFOLLOW, so no entry can escape the root: ".." and
// absolute names are refused, a path through a symlink is refused, hardlinks
// only point at regular files already inside the root, device nodes are refused,
// setuid/setgid bits are dropped unless allowed, and the bytes are counted
// against a quota. OCI whiteouts (".wh.NAME", ".wh..wh..opq") remove what lower
// layers put there.

#include "mbl/archive_ptr.h"
#include "mbl/expected.h"
#include "mbl/fd.h"

#include <atomic>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace mbl::containers {

struct UnpackLimits {
    std::uint64_t quotaBytes = 1ull << 30; // sum of file sizes across all layers
    bool allowSetuid = false;
    bool applyWhiteouts = true; // OCI layers: yes; a bundle's rootfs/: no
    // Set from another thread (the daemon stopping): the unpack ends with Cancelled.
    const std::atomic<bool>* cancel = nullptr;
};

class RootfsWriter {
public:
    // `root` must exist and be a directory; it is opened once and used as the anchor.
    static Expected<RootfsWriter> open(const std::string& root, const UnpackLimits& limits);

    // Unpacks every entry of an open libarchive reader. `stripPrefix` ("rootfs/")
    // is removed from each name; entries outside it are an error.
    Status unpackLayer(struct archive* reader, const std::string& what);
    // Unpacks one entry whose header was just read (the caller iterates);
    // `name` is the entry's path relative to the root.
    Status unpackEntry(struct archive* reader, struct archive_entry* entry, const std::string& name,
                       const std::string& what);
    // Starts a new layer (whiteouts only hide what earlier layers made).
    void beginLayer() { thisLayer_.clear(); }

    std::uint64_t bytesWritten() const { return used_; }
    // Files whose setuid/setgid bits were dropped (the device policy does not allow them).
    std::uint64_t setuidDropped() const { return setuidDropped_; }
    const std::vector<std::string>& setuidExamples() const { return setuidExamples_; }

private:
    RootfsWriter() = default;
    // Opens (creating when asked) the directory holding `components[0..n-1]`.
    Expected<Fd> openParent(const std::vector<std::string>& components, bool create, const std::string& what);
    Status writeRegular(struct archive* reader, int parent, const std::string& leaf, mode_t mode,
                        const std::string& what);

    Fd root_;
    UnpackLimits limits_;
    std::uint64_t used_ = 0;
    std::uint64_t setuidDropped_ = 0;
    std::vector<std::string> setuidExamples_; // the first few
    std::set<std::string> thisLayer_;
};

// Splits and checks a tar entry name: strips "./" and a trailing "/", refuses
// empty names, absolute names and ".." components. Exposed for tests.
Expected<std::vector<std::string>> splitEntryPath(const std::string& name);

// Removes `name` inside directory `dirfd` (recursively, never following symlinks).
Status removeAt(int dirfd, const std::string& name);

} // namespace mbl::containers

namespace mbl::containers {
// Reads a file inside `root` without following any symlink on the way (a
// rootfs from an image is untrusted); NotFound if it is not there.
Expected<std::string> readFileUnder(const std::string& root, const std::string& rel, std::size_t maxBytes);
} // namespace mbl::containers
