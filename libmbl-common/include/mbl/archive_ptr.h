// SPDX-License-Identifier: Apache-2.0
#pragma once
// libarchive handles owned by RAII. Read handles are freed with
// archive_read_free, write handles with archive_write_free.

#include <archive.h>
#include <archive_entry.h>

#include <memory>
#include <string>

namespace mbl {

struct ArchiveReadFree {
    void operator()(struct archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteFree {
    void operator()(struct archive* a) const { archive_write_free(a); }
};
struct ArchiveEntryFree {
    void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

using ArchiveReader = std::unique_ptr<struct archive, ArchiveReadFree>;
using ArchiveWriter = std::unique_ptr<struct archive, ArchiveWriteFree>;
using ArchiveEntry = std::unique_ptr<struct archive_entry, ArchiveEntryFree>;

// The reason libarchive gives for its last failure. It may give none
// (archive_error_string() is NULL, e.g. for some damaged tar headers), which
// must not reach a std::string as a null pointer.
inline std::string archiveErrorString(struct archive* a)
{
    const char* m = archive_error_string(a);
    return m != nullptr ? std::string(m) : std::string("damaged data (libarchive gives no reason)");
}

} // namespace mbl
