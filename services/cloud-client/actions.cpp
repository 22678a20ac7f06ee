// SPDX-License-Identifier: Apache-2.0
#include "actions.h"

#include "mbl/fs.h"

#include <algorithm>

namespace mbl::cloud {

using nlohmann::json;

ActionBook::ActionBook(std::string path) : path_(std::move(path))
{
    if (auto text = fs::readFile(path_, 1u << 16)) {
        json j = json::parse(*text, nullptr, false);
        if (j.is_array()) {
            for (const auto& v : j) {
                if (v.is_string()) {
                    closed_.push_back(v.get<std::string>());
                }
            }
        }
    }
}

bool ActionBook::closed(const std::string& actionId) const
{
    return std::find(closed_.begin(), closed_.end(), actionId) != closed_.end();
}

Status ActionBook::rememberClosed(const std::string& actionId)
{
    if (closed(actionId)) {
        return {};
    }
    auto next = closed_;
    next.push_back(actionId);
    if (next.size() > kClosedKept) {
        next.erase(next.begin(), next.begin() + static_cast<std::ptrdiff_t>(next.size() - kClosedKept));
    }
    if (auto st = fs::writeFileAtomic(path_, json(next).dump(), 0600); !st) {
        return st;
    }
    closed_ = std::move(next);
    return {};
}

std::string ActionBook::fetchedHref(const std::string& actionId) const
{
    auto it = hrefs_.find(actionId);
    return it == hrefs_.end() ? std::string() : it->second;
}

bool ActionBook::changed(const std::string& actionId, const json& doc) const
{
    auto it = deployments_.find(actionId);
    return it == deployments_.end() || it->second != doc;
}

json ActionBook::deployment(const std::string& actionId) const
{
    auto it = deployments_.find(actionId);
    return it == deployments_.end() ? json() : it->second;
}

bool ActionBook::notAnnounced(const std::string& actionId, const json& doc)
{
    auto it = deployments_.find(actionId);
    if (it == deployments_.end() || it->second != doc) {
        return false;
    }
    deployments_.erase(it);
    hrefs_.erase(actionId);
    return true;
}

void ActionBook::forgetAnnouncements()
{
    deployments_.clear();
    hrefs_.clear();
    cancelPending_.clear();
}

bool ActionBook::askCancel(const std::string& actionId)
{
    if (closed(actionId) || cancelAnswered_.count(actionId) != 0) {
        return false;
    }
    return cancelPending_.insert(actionId).second;
}

void ActionBook::cancelAnswered(const std::string& actionId)
{
    cancelPending_.erase(actionId);
    cancelAnswered_.insert(actionId);
}

void ActionBook::cancelsOffered(const std::set<std::string>& offered)
{
    for (auto it = cancelAnswered_.begin(); it != cancelAnswered_.end();) {
        it = offered.count(*it) == 0 ? cancelAnswered_.erase(it) : std::next(it);
    }
}

} // namespace mbl::cloud
