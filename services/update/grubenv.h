// SPDX-License-Identifier: Apache-2.0
#pragma once
// The GRUB environment block, written so that a power cut at any moment leaves a
// block GRUB can read.
//
// `grub-editenv` opens grubenv with O_TRUNC and writes it again: a power cut in
// between leaves an empty or short file, which GRUB's load_env refuses (no
// signature, or a size that is not a whole block), and the boot script falls back
// to its factory order or boots nothing. GRUB itself (save_env) never changes the
// file's size or blocks: it writes the block's sectors in place. So do we:
//
// - An existing, valid block (the signature, a size that is a multiple of 1024)
//   is overwritten in place: one pwrite of the whole block at offset 0, same
//   size, no truncation, then fdatasync. The file keeps its clusters (FAT) or
//   blocks (ext4), so GRUB reads the new block through its own file system driver
//   without any journal replay (GRUB replays none), and its save_env keeps writing
//   where the file is.
// - The boot variables (BOOT_ORDER, BOOT_<name>_LEFT) come first, then MBL_*,
//   then anything else, and the rest of the block is '#' padding. While they fit
//   in the first 512-byte sector (the usual case: a few dozen bytes each), a
//   write torn between sectors leaves the first sector wholly old or wholly new
//   and the padding: the boot variables are the old set or the new set, never a
//   mix; and at any byte the block keeps its signature and its size, so it stays
//   readable.
// - No block yet, or an unreadable one (truncated by an earlier grub-editenv):
//   a new file is written beside it, fsynced, renamed over it, and the folder
//   fsynced. Before the rename the old file is as it was.
//
// The format (GRUB's grub-core/lib/envblk.c): "# GRUB Environment Block\n", then
// "name=value\n" per variable (a backslash or newline in a value escaped with a
// backslash), then '#' up to the block size.

#include "mbl/expected.h"

#include <cstddef>
#include <functional>
#include <map>
#include <string>

namespace mbl::update::grubenv {

inline constexpr const char* kSignature = "# GRUB Environment Block\n";
inline constexpr std::size_t kBlockSize = 1024;

// The block for `vars`, `size` bytes (a multiple of kBlockSize); NoSpace if they do
// not fit, InvalidArgument for a name GRUB cannot hold.
Expected<std::string> render(const std::map<std::string, std::string>& vars, std::size_t size = kBlockSize);

// Whether `data` is a block GRUB's load_env accepts (signature, whole blocks).
bool isValidBlock(const std::string& data);

// Test hook: called before each step of a write ("open", "write", "sync",
// "create-tmp", "rename", "sync-dir"); a false return stops the write there,
// as a process killed at that point would.
using StepHook = std::function<bool(const char* step)>;

// Writes `vars` as the whole block at `path`, in place when the file is a
// valid block (keeping its size), else through a new file renamed over it.
Status write(const std::string& path, const std::map<std::string, std::string>& vars, const StepHook& hook = {});

} // namespace mbl::update::grubenv
