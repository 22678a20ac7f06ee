#pragma once
// libarchive handles owned by RAII. Read handles are freed with
// archive_read_free, write handles with archive_write_free.

#include <archive.h>
#include <archive_entry.h>

#include <memory>

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

} // namespace mbl
