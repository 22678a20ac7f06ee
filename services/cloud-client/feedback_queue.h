// SPDX-License-Identifier: Apache-2.0
#pragma once
// Feedback waiting for the server, kept in order in one file that is replaced
// atomically on every change, so a crash or power loss loses nothing and
// delivery resumes in order after a restart or reconnect.

#include "mbl/expected.h"

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace mbl::cloud {

struct QueuedFeedback {
    std::string actionId;
    std::string endpoint; // "deploymentBase" or "cancelAction"
    std::string body;     // the DDI feedback JSON
};

class FeedbackQueue {
public:
    // Loads the queue from `path` (a missing file is an empty queue; a corrupt one is
    // kept aside as <path>.corrupt and the queue starts empty).
    static Expected<std::unique_ptr<FeedbackQueue>> open(const std::string& path);
    // At most this many entries wait (older proceeding messages are not dropped: push fails with NoSpace).
    static constexpr std::size_t kMaxEntries = 1000;

    Status push(const QueuedFeedback& f);
    std::optional<QueuedFeedback> front() const;
    Status pop();
    // Drops every entry of an action (the server answered 410 Gone).
    Status dropAction(const std::string& actionId);
    std::size_t size() const;

private:
    Status save();
    std::string path_;
    std::deque<QueuedFeedback> items_;
    mutable std::mutex mu_;
};

} // namespace mbl::cloud
