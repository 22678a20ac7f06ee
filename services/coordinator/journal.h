// SPDX-License-Identifier: Apache-2.0
#pragma once
// The operation journal: the running operation is one JSON file replaced
// atomically (temp, fsync, rename, fsync dir) before every step is taken, so a
// kill -9 or power loss at any point leaves the last step whole; finished
// operations move to a bounded history. A cloud deployment queued behind the
// running one is kept beside it (the cloud client does not send it again).

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace mbl::coordinator {

class Journal {
public:
    explicit Journal(std::string dir, std::size_t historyLimit = 50);

    // The operation that was running when the daemon stopped, if any.
    Expected<std::optional<nlohmann::json>> loadCurrent() const;
    Status saveCurrent(const nlohmann::json& op);
    // Moves the operation to the history and clears the current one.
    Status finish(const nlohmann::json& op);
    // Newest first, at most `count`.
    nlohmann::json history(std::size_t count) const;

    // The queued deployment (null: none).
    nlohmann::json loadPending() const;
    Status savePending(const nlohmann::json& deployment);

    const std::string& dir() const { return dir_; }

private:
    std::string currentPath() const { return dir_ + "/current.json"; }
    std::string historyPath() const { return dir_ + "/history.json"; }
    std::string pendingPath() const { return dir_ + "/pending.json"; }
    std::string dir_;
    std::size_t historyLimit_;
};

} // namespace mbl::coordinator
