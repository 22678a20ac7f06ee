// SPDX-License-Identifier: Apache-2.0
#include "feedback_queue.h"

#include "mbl/fs.h"
#include "mbl/log.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace mbl::cloud {

using nlohmann::json;

Expected<std::unique_ptr<FeedbackQueue>> FeedbackQueue::open(const std::string& path)
{
    auto q = std::unique_ptr<FeedbackQueue>(new FeedbackQueue());
    q->path_ = path;
    if (!fs::exists(path)) {
        return q;
    }
    auto text = fs::readFile(path, 64u << 20);
    if (!text) {
        return unexpected(text.error());
    }
    json j = json::parse(*text, nullptr, false);
    bool ok = j.is_array();
    if (ok) {
        for (const auto& e : j) {
            if (!e.is_object() || !e.contains("action_id") || !e["action_id"].is_string() || !e.contains("endpoint") ||
                !e["endpoint"].is_string() || !e.contains("body") || !e["body"].is_string()) {
                ok = false;
                break;
            }
            q->items_.push_back({e["action_id"], e["endpoint"], e["body"]});
        }
    }
    if (!ok) {
        log::error("feedback queue " + path + " is corrupt; kept as " + path + ".corrupt, starting empty");
        q->items_.clear();
        std::rename(path.c_str(), (path + ".corrupt").c_str());
    }
    return q;
}

Status FeedbackQueue::save()
{
    json j = json::array();
    for (const auto& i : items_) {
        j.push_back({{"action_id", i.actionId}, {"endpoint", i.endpoint}, {"body", i.body}});
    }
    return fs::writeFileAtomic(path_, j.dump(), 0600);
}

Status FeedbackQueue::push(const QueuedFeedback& f)
{
    std::lock_guard<std::mutex> lk(mu_);
    if (items_.size() >= kMaxEntries) {
        return unexpected(ErrorCode::NoSpace, "the offline feedback queue is full (" + std::to_string(kMaxEntries) +
                                                  " messages); it drains when the server is reachable again");
    }
    items_.push_back(f);
    auto st = save();
    if (!st) {
        items_.pop_back();
    }
    return st;
}

std::optional<QueuedFeedback> FeedbackQueue::front() const
{
    std::lock_guard<std::mutex> lk(mu_);
    if (items_.empty()) {
        return std::nullopt;
    }
    return items_.front();
}

Status FeedbackQueue::pop()
{
    std::lock_guard<std::mutex> lk(mu_);
    if (!items_.empty()) {
        items_.pop_front();
    }
    return save();
}

Status FeedbackQueue::dropAction(const std::string& actionId)
{
    std::lock_guard<std::mutex> lk(mu_);
    std::deque<QueuedFeedback> kept;
    for (auto& i : items_) {
        if (i.actionId != actionId) {
            kept.push_back(std::move(i));
        }
    }
    items_ = std::move(kept);
    return save();
}

std::size_t FeedbackQueue::size() const
{
    std::lock_guard<std::mutex> lk(mu_);
    return items_.size();
}

} // namespace mbl::cloud
