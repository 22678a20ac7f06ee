// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the cloud client knows about the server's actions: the deployment last
// announced for each (so a changed document is announced again and an unchanged
// one is not), the actions this device closed (persisted, never announced
// again), and the cancel requests: asked once, answered once. Not thread-safe:
// the CloudClient's lock guards it.

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace mbl::cloud {

class ActionBook {
public:
    static constexpr std::size_t kClosedKept = 64;

    // Loads closed-actions.json from `path` (missing or damaged: none).
    explicit ActionBook(std::string path);

    bool closed(const std::string& actionId) const;
    // Persisted before it counts; the oldest fall out after kClosedKept.
    Status rememberClosed(const std::string& actionId);

    // The deploymentBase href last read for the action ("" if none this run).
    std::string fetchedHref(const std::string& actionId) const;
    void setFetchedHref(const std::string& actionId, const std::string& href) { hrefs_[actionId] = href; }
    // True when `doc` differs from the deployment announced last for the action
    // (or none was announced since the start): it must be announced.
    bool changed(const std::string& actionId, const nlohmann::json& doc) const;
    void announced(const std::string& actionId, const nlohmann::json& doc) { deployments_[actionId] = doc; }
    // The deployment announced last for the action (null when none).
    nlohmann::json deployment(const std::string& actionId) const;
    // The announcement of `doc` never reached anyone (the signal could not be
    // sent): it counts as not announced, so the next poll reads the action and
    // announces it again. False when a newer document was announced since.
    bool notAnnounced(const std::string& actionId, const nlohmann::json& doc);
    // Whoever heard the announcements is gone (the coordinator restarted): every
    // open action and pending cancel counts as not announced, so the next poll
    // reads and announces them again. Closed actions stay closed.
    void forgetAnnouncements();

    // Cancel requests: true when this stopId should be announced (not pending, not answered).
    bool askCancel(const std::string& actionId);
    bool cancelPending(const std::string& actionId) const { return cancelPending_.count(actionId) != 0; }
    // Asked for, answered, or the action is closed here: nothing to ask.
    bool cancelKnown(const std::string& actionId) const
    {
        return closed(actionId) || cancelPending_.count(actionId) != 0 || cancelAnswered_.count(actionId) != 0;
    }
    // The device answered: no second CancelRequested for this request.
    void cancelAnswered(const std::string& actionId);
    // The poll no longer offers cancelAction for these: a later cancel of them is a new request.
    void cancelsOffered(const std::set<std::string>& offered);

private:
    std::string path_;
    std::vector<std::string> closed_; // oldest first
    std::map<std::string, std::string> hrefs_;
    std::map<std::string, nlohmann::json> deployments_;
    std::set<std::string> cancelPending_;
    std::set<std::string> cancelAnswered_;
};

} // namespace mbl::cloud
