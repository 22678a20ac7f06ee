// SPDX-License-Identifier: Apache-2.0
#include "journal.h"

#include "mbl/fs.h"

#include <cerrno>
#include <unistd.h>

namespace mbl::coordinator {

Journal::Journal(std::string dir, std::size_t historyLimit) : dir_(std::move(dir)), historyLimit_(historyLimit) {}

Expected<std::optional<nlohmann::json>> Journal::loadCurrent() const
{
    if (!fs::exists(currentPath())) {
        return std::optional<nlohmann::json>{};
    }
    auto text = fs::readFile(currentPath());
    if (!text) {
        return unexpected(text.error());
    }
    auto doc = nlohmann::json::parse(*text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("id")) {
        // Cannot happen through atomic replace; refuse to guess rather than act on it.
        return unexpected(ErrorCode::Io, currentPath() + ": journal is not a valid operation record");
    }
    return std::optional<nlohmann::json>{std::move(doc)};
}

Status Journal::saveCurrent(const nlohmann::json& op)
{
    return fs::writeFileAtomic(currentPath(), op.dump(), 0600);
}

nlohmann::json Journal::history(std::size_t count) const
{
    nlohmann::json out = nlohmann::json::array();
    auto text = fs::readFile(historyPath());
    if (!text) {
        return out;
    }
    auto doc = nlohmann::json::parse(*text, nullptr, false);
    if (!doc.is_array()) {
        return out;
    }
    for (std::size_t i = 0; i < doc.size() && i < count; ++i) {
        out.push_back(doc[i]);
    }
    return out;
}

Status Journal::finish(const nlohmann::json& op)
{
    nlohmann::json hist = history(historyLimit_);
    nlohmann::json updated = nlohmann::json::array();
    updated.push_back(op);
    for (std::size_t i = 0; i < hist.size() && updated.size() < historyLimit_; ++i) {
        if (hist[i].value("id", "") != op.value("id", "")) {
            updated.push_back(hist[i]);
        }
    }
    // History first, then drop the current record: a crash between the two leaves
    // the op in both, and loading it again finds it already finished. When the
    // history cannot be written (a full or failing disk) the current record is
    // dropped all the same: a finished operation must never be resumed.
    Status st = fs::writeFileAtomic(historyPath(), updated.dump(), 0600);
    if (::unlink(currentPath().c_str()) != 0 && errno != ENOENT && st) {
        st = unexpected(errnoError("remove " + currentPath(), errno));
    }
    if (auto synced = fs::syncDir(dir_); !synced && st) {
        st = synced;
    }
    return st;
}

nlohmann::json Journal::loadPending() const
{
    auto text = fs::readFile(pendingPath(), 4u << 20);
    if (!text) {
        return nullptr;
    }
    auto doc = nlohmann::json::parse(*text, nullptr, false);
    return doc.is_object() ? doc : nlohmann::json(nullptr);
}

Status Journal::savePending(const nlohmann::json& deployment)
{
    if (deployment.is_null()) {
        if (::unlink(pendingPath().c_str()) != 0 && errno != ENOENT) {
            return unexpected(errnoError("remove " + pendingPath(), errno));
        }
        return fs::syncDir(dir_);
    }
    return fs::writeFileAtomic(pendingPath(), deployment.dump(), 0600);
}

} // namespace mbl::coordinator
