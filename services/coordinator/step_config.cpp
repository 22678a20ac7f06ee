// SPDX-License-Identifier: Apache-2.0
// Step "configuring" and its undo "rolling-back-config": a config payload
// (checked when its bundle was staged) is applied through the services that own
// each setting. What is in effect is read (GetSettings, and the hostname) and
// journaled first; the rollback applies exactly that again, section by
// section, each restored section journaled so a restart goes on from there.

#include "coordinator.h"
#include "sequence.h"

#include "mbl/log.h"

namespace mbl::coordinator {

namespace {
const char* const kCloudBus = "org.mbl.CloudClient1";
const char* const kContainersBus = "org.mbl.ContainerManager1";
const char* const kHostname = "hostname";

std::string sectionName(const std::string& key)
{
    return key == kCloudBus ? "cloud" : key == kContainersBus ? "containers" : key;
}

// The sections of a config document, in the order they are applied.
std::vector<std::string> sectionsOf(const nlohmann::json& doc)
{
    std::vector<std::string> out;
    if (doc.contains("cloud")) {
        out.push_back(kCloudBus);
    }
    if (doc.contains("containers")) {
        out.push_back(kContainersBus);
    }
    if (doc.contains("hostname")) {
        out.push_back(kHostname);
    }
    return out;
}
} // namespace

void Coordinator::applyConfig()
{
    const std::string version = op_->config.value("version", std::string());
    if (!enter(State::Configuring, "applying the device configuration " + version)) {
        return;
    }
    if (op_->configPrevious) {
        applyConfigSections(); // a restart: the saved settings are those before the first attempt
        return;
    }
    // 1. What is in effect now, journaled before anything changes.
    auto sections = std::make_shared<std::vector<std::string>>(sectionsOf(op_->config));
    auto prev = std::make_shared<std::map<std::string, std::string>>();
    sequence(
        sections->size(),
        [this, sections, prev](std::size_t i, Done next) {
            const std::string key = (*sections)[i];
            if (key == kHostname) {
                (*prev)[key] = peers_.currentHostname();
                next({});
                return;
            }
            peers_.getSettings(key, guarded([prev, key, next](Expected<std::string> current) {
                if (!current) {
                    next(unexpected(current.error().code, "config: cannot read the settings of " + key + ": " +
                                                              current.error().message));
                    return;
                }
                (*prev)[key] = *current;
                next({});
            }));
        },
        guarded([this, prev](Status st) {
            if (!st) {
                rollBack(st.error());
                return;
            }
            op_->configPrevious = *prev;
            if (save()) {
                applyConfigSections();
            }
        }));
}

void Coordinator::applyConfigSections()
{
    // 2. Each section through the service that owns it; the first refusal rolls
    //    everything back (the saved settings are applied again).
    auto sections = std::make_shared<std::vector<std::string>>(sectionsOf(op_->config));
    const nlohmann::json doc = op_->config;
    sequence(
        sections->size(),
        [this, sections, doc](std::size_t i, Done next) {
            const std::string key = (*sections)[i];
            if (op_->configAttempted < i + 1) {
                // Journaled before it is sent: the rollback restores what may have changed.
                op_->configAttempted = i + 1;
                if (!save()) {
                    return;
                }
            }
            auto named = [this, i, key, next](Status st) {
                if (st && pauseAt("configuring:" + std::to_string(i + 1))) {
                    return; // test hook: section i applied, the next not sent
                }
                next(st ? st : Status{unexpected(st.error().code, "config: " + sectionName(key) + ": " +
                                                                      st.error().message)});
            };
            if (key == kHostname) {
                peers_.setHostname(doc.value("hostname", std::string()), guarded(named));
            } else {
                peers_.applySettings(key, doc[key == kCloudBus ? "cloud" : "containers"].dump(), guarded(named));
            }
        },
        guarded([this](Status st) {
            if (!st) {
                rollBack(st.error());
                return;
            }
            op_->configApplied = true;
            bumpProgress(82);
            if (!save()) {
                return;
            }
            feedbackProgress("device configuration " + op_->config.value("version", std::string()) + " applied");
            advance();
        }));
}

void Coordinator::restoreConfig()
{
    const auto prev = op_->configPrevious.value_or(std::map<std::string, std::string>{});
    // The sections that were sent (or may have been), in the order they were.
    auto keys = std::make_shared<std::vector<std::string>>();
    const auto all = sectionsOf(op_->config);
    for (std::size_t i = 0; i < all.size() && i < op_->configAttempted; ++i) {
        if (prev.count(all[i]) != 0) {
            keys->push_back(all[i]);
        }
    }
    const std::size_t from = op_->configRestored;
    auto failures = std::make_shared<std::vector<std::string>>();
    sequence(
        keys->size() > from ? keys->size() - from : 0,
        [this, keys, prev, from, failures](std::size_t j, Done next) {
            const std::size_t i = from + j;
            const std::string key = (*keys)[i];
            auto restored = guarded([this, i, key, failures, next](Status st) {
                if (!st) {
                    // Nothing else can be done about it here; it is said in the outcome.
                    log::error(op_->id + ": restoring the settings of " + sectionName(key) + " failed: " +
                               st.error().describe());
                    failures->push_back(sectionName(key) + " (" + st.error().message + ")");
                }
                op_->configRestored = i + 1;
                if (!save() || pauseAt("rolling-back-config:" + std::to_string(i + 1))) {
                    return;
                }
                next({});
            });
            if (key == kHostname) {
                peers_.setHostname(prev.at(key), restored);
            } else {
                peers_.applySettings(key, prev.at(key), restored);
            }
        },
        guarded([this, failures](Status) {
            if (failures->empty()) {
                op_->undone.push_back("the previous configuration was restored");
            } else {
                std::string what;
                for (const auto& f : *failures) {
                    what += (what.empty() ? "" : ", ") + f;
                }
                op_->undoFailures.push_back("the previous configuration could not be restored for " + what);
            }
            op_->configApplied = false;
            if (save()) {
                rollbackNext();
            }
        }));
}

} // namespace mbl::coordinator
