// SPDX-License-Identifier: Apache-2.0
#pragma once
// File-system helpers with the crash-safety rules of the project: a file is
// replaced atomically (temp file in the same directory, fsync, rename, fsync of
// the directory), so after a crash the old or the new content is there, whole.

#include "mbl/expected.h"

#include <cstdint>
#include <string>
#include <sys/types.h>

namespace mbl::fs {

// Replaces `path` with `data` atomically and durably. `mode` applies to the new file.
Status writeFileAtomic(const std::string& path, const std::string& data, mode_t mode = 0644);

// Reads a whole file; refuses files larger than maxBytes (InvalidArgument).
Expected<std::string> readFile(const std::string& path, std::uint64_t maxBytes = 16u << 20);

// Reads everything from an fd (up to maxBytes).
Expected<std::string> readAll(int fd, std::uint64_t maxBytes = 16u << 20);

// Writes all of data to fd, retrying on EINTR and short writes.
Status writeAll(int fd, const void* data, std::size_t len);

// mkdir -p with the given mode for directories it creates.
Status makeDirs(const std::string& path, mode_t mode = 0755);

// rm -rf that never follows symlinks; missing path is not an error.
Status removeTree(const std::string& path);

// fsync of a directory (after a rename or unlink in it).
Status syncDir(const std::string& dir);

// syncfs(2) of the file system that holds path: every file written there
// (e.g. a tree unpacked without a fsync per file) is on the disk when it returns.
Status syncFileSystem(const std::string& path);

bool exists(const std::string& path);

// Directory part of a path ("a/b/c" -> "a/b", "c" -> ".").
std::string dirName(const std::string& path);

} // namespace mbl::fs
