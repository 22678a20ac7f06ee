// SPDX-License-Identifier: Apache-2.0
#include "boot_policy.h"

#include "mbl/log.h"
#include "mbl/strings.h"

#include <algorithm>

namespace mbl::update {

namespace {

struct StatusName {
    SlotStatus status;
    const char* name;
};
constexpr StatusName kStatusNames[] = {
    {SlotStatus::Empty, "empty"}, {SlotStatus::Staged, "staged"}, {SlotStatus::Armed, "armed"},
    {SlotStatus::Trial, "trial"}, {SlotStatus::Good, "good"},     {SlotStatus::Bad, "bad"},
};

struct EventName {
    SlotEvent event;
    const char* name;
};
constexpr EventName kEventNames[] = {
    {SlotEvent::Claim, "claim"},       {SlotEvent::Stage, "stage"},         {SlotEvent::Arm, "arm"},
    {SlotEvent::Boot, "boot"},         {SlotEvent::Commit, "commit"},       {SlotEvent::MarkBad, "mark-bad"},
    {SlotEvent::FallBack, "fall-back"}, {SlotEvent::Release, "release"},     {SlotEvent::Refill, "refill"},
};

// A decimal counter as the boot scripts read it; anything else counts as 0.
std::uint64_t number(const std::string& s)
{
    if (s.empty() || s.size() > 19 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return 0;
    }
    return std::stoull(s);
}

std::string get(const std::map<std::string, std::string>& env, const std::string& key)
{
    auto it = env.find(key);
    return it == env.end() ? std::string() : it->second;
}

// What the environment's record says of a slot (C7: MBL_<name>_STATE). A staged
// slot is "empty" there: it is not bootable, and its staging lives on the data partition.
const char* envStateName(SlotStatus s)
{
    switch (s) {
    case SlotStatus::Armed:
    case SlotStatus::Trial:
        return "trial";
    case SlotStatus::Good:
        return "good";
    case SlotStatus::Bad:
        return "bad";
    case SlotStatus::Empty:
    case SlotStatus::Staged:
        return "empty";
    }
    return "empty";
}

std::optional<SlotStatus> envStatus(const std::string& v)
{
    if (v == "empty") {
        return SlotStatus::Empty;
    }
    if (v == "trial") {
        return SlotStatus::Armed; // booted or not is told by the boot (start)
    }
    if (v == "good") {
        return SlotStatus::Good;
    }
    if (v == "bad") {
        return SlotStatus::Bad;
    }
    return std::nullopt;
}

void applyTo(std::map<std::string, std::string>& env, const std::map<std::string, std::optional<std::string>>& changes)
{
    for (const auto& [k, v] : changes) {
        if (v) {
            env[k] = *v;
        } else {
            env.erase(k);
        }
    }
}

} // namespace

const char* slotStatusName(SlotStatus s)
{
    for (const auto& n : kStatusNames) {
        if (n.status == s) {
            return n.name;
        }
    }
    return "empty";
}

std::optional<SlotStatus> slotStatusFromName(const std::string& name)
{
    for (const auto& n : kStatusNames) {
        if (name == n.name) {
            return n.status;
        }
    }
    return std::nullopt;
}

const char* slotEventName(SlotEvent e)
{
    for (const auto& n : kEventNames) {
        if (n.event == e) {
            return n.name;
        }
    }
    return "?";
}

const std::vector<SlotTransition> kSlotTransitions = {
    // An install claims the inactive slot, whatever it held (never the booted one).
    {SlotEvent::Claim, SlotStatus::Empty, SlotStatus::Empty},
    {SlotEvent::Claim, SlotStatus::Staged, SlotStatus::Empty},
    {SlotEvent::Claim, SlotStatus::Armed, SlotStatus::Empty},
    {SlotEvent::Claim, SlotStatus::Good, SlotStatus::Empty},
    {SlotEvent::Claim, SlotStatus::Bad, SlotStatus::Empty},
    {SlotEvent::Stage, SlotStatus::Empty, SlotStatus::Staged},
    {SlotEvent::Arm, SlotStatus::Empty, SlotStatus::Armed},  // Install with arm=true
    {SlotEvent::Arm, SlotStatus::Staged, SlotStatus::Armed}, // Arm(operation)
    {SlotEvent::Boot, SlotStatus::Armed, SlotStatus::Trial},
    {SlotEvent::Commit, SlotStatus::Trial, SlotStatus::Good},
    {SlotEvent::MarkBad, SlotStatus::Armed, SlotStatus::Bad},
    {SlotEvent::MarkBad, SlotStatus::Trial, SlotStatus::Bad},
    {SlotEvent::FallBack, SlotStatus::Armed, SlotStatus::Bad},
    {SlotEvent::FallBack, SlotStatus::Trial, SlotStatus::Bad},
    {SlotEvent::Release, SlotStatus::Staged, SlotStatus::Empty},
    {SlotEvent::Refill, SlotStatus::Good, SlotStatus::Good},
};

std::optional<SlotStatus> nextStatus(SlotStatus from, SlotEvent event)
{
    for (const auto& t : kSlotTransitions) {
        if (t.event == event && t.from == from) {
            return t.to;
        }
    }
    return std::nullopt;
}

namespace bootenv {
std::string order()
{
    return "BOOT_ORDER";
}
std::string left(const std::string& bootname)
{
    return "BOOT_" + bootname + "_LEFT";
}
std::string state(const std::string& bootname)
{
    return "MBL_" + bootname + "_STATE";
}
std::string version(const std::string& bootname)
{
    return "MBL_" + bootname + "_VERSION";
}
std::string securityVersion(const std::string& bootname)
{
    return "MBL_" + bootname + "_SECURITY_VERSION";
}
std::string floor()
{
    return "MBL_SECURITY_VERSION_FLOOR";
}
} // namespace bootenv

BootPolicy::BootPolicy(std::unique_ptr<Bootloader> bootloader, Settings settings)
    : bootloader_(std::move(bootloader)), settings_(std::move(settings))
{
}

const SlotConfig* BootPolicy::slot(const std::string& name) const
{
    for (const auto& s : settings_.slots) {
        if (s.name == name) {
            return &s;
        }
    }
    return nullptr;
}

BootPolicy::View BootPolicy::view() const
{
    std::lock_guard<std::mutex> l(viewMutex_);
    return View{booted_, active_, floor_, slots_};
}

std::vector<std::string> BootPolicy::orderOf(const Env& env) const
{
    return str::words(get(env, bootenv::order()));
}

std::string BootPolicy::firstBootable(const Env& env) const
{
    // What the boot scripts do: the first name of BOOT_ORDER with attempts left.
    for (const auto& bn : orderOf(env)) {
        if (number(get(env, bootenv::left(bn))) > 0) {
            return bn;
        }
    }
    return "";
}

std::string BootPolicy::activeFrom(const Env& env) const
{
    const std::string bn = firstBootable(env);
    for (const auto& s : settings_.slots) {
        if (s.bootname == bn) {
            return s.name;
        }
    }
    return "";
}

void BootPolicy::recordChanges(const SlotConfig& s, const SlotRecord& after, Changes& out) const
{
    out[bootenv::state(s.bootname)] = std::string(envStateName(after.status));
    const bool holds = after.status != SlotStatus::Empty && after.status != SlotStatus::Staged;
    out[bootenv::version(s.bootname)] = holds ? after.version : std::string();
    out[bootenv::securityVersion(s.bootname)] = std::to_string(holds ? after.securityVersion : 0);
}

std::string BootPolicy::orderWith(const Env& env, const std::map<std::string, SlotRecord>& slots,
                                  const std::string& first) const
{
    std::vector<std::string> out;
    auto add = [&](const std::string& bn) {
        if (!bn.empty() && std::find(out.begin(), out.end(), bn) == out.end()) {
            out.push_back(bn);
        }
    };
    add(first);
    // The good slots, the booted one first: the fallbacks.
    std::vector<const SlotConfig*> byPreference;
    if (const SlotConfig* b = slot(booted_)) {
        byPreference.push_back(b);
    }
    for (const auto& s : settings_.slots) {
        if (s.name != booted_) {
            byPreference.push_back(&s);
        }
    }
    for (const SlotConfig* s : byPreference) {
        auto it = slots.find(s->name);
        if (it != slots.end() && it->second.status == SlotStatus::Good) {
            add(s->bootname);
        }
    }
    // Names we know nothing of (not on record, or not ours) stay where they were.
    for (const auto& bn : orderOf(env)) {
        const SlotConfig* s = nullptr;
        for (const auto& c : settings_.slots) {
            if (c.bootname == bn) {
                s = &c;
            }
        }
        if (s == nullptr) {
            add(bn);
            continue;
        }
        auto it = slots.find(s->name);
        if (it == slots.end() || !it->second.onRecord) {
            add(bn);
        }
    }
    return str::join(out);
}

Status BootPolicy::writeEnv(const Changes& changes)
{
    Changes effective;
    for (const auto& [k, v] : changes) {
        auto it = env_.find(k);
        const bool same = v ? (it != env_.end() && it->second == *v) : it == env_.end();
        if (!same) {
            effective[k] = v;
        }
    }
    if (effective.empty()) {
        return {};
    }
    if (auto st = bootloader_->write(effective); !st) {
        return st;
    }
    applyTo(env_, effective);
    return {};
}

Status BootPolicy::step(const std::string& name, SlotEvent event, const SlotRecord& after, const Changes& changes)
{
    const SlotRecord& cur = slots_[name];
    auto to = nextStatus(cur.status, event);
    if (!to || *to != after.status) {
        return unexpected(ErrorCode::Failed, "slot " + name + " is " + slotStatusName(cur.status) + ": no '" +
                                                 slotEventName(event) + "' from there");
    }
    if (auto st = writeEnv(changes); !st) {
        return st;
    }
    std::lock_guard<std::mutex> l(viewMutex_);
    slots_[name] = after;
    active_ = activeFrom(env_);
    return {};
}

Expected<BootPolicy::Started> BootPolicy::start(const std::string& booted, const Copy& copy)
{
    std::lock_guard<std::mutex> op(opMutex_);
    auto env = bootloader_->read();
    if (!env) {
        return unexpected(env.error());
    }
    env_ = *env;
    {
        std::lock_guard<std::mutex> l(viewMutex_);
        booted_ = booted;
    }
    auto bootable = [&](const std::string& bn) {
        const auto order = orderOf(env_);
        return std::find(order.begin(), order.end(), bn) != order.end() && number(get(env_, bootenv::left(bn))) > 0;
    };
    std::map<std::string, SlotRecord> slots;
    std::vector<const SlotConfig*> unrecorded; // on record in the copy or by the factory rule, not in the environment
    for (const auto& s : settings_.slots) {
        SlotRecord rec;
        auto fromCopy = copy.slots.find(s.name);
        const SlotRecord* c = fromCopy == copy.slots.end() ? nullptr : &fromCopy->second;
        const auto recorded = envStatus(get(env_, bootenv::state(s.bootname)));
        if (recorded) {
            // The environment is the authority; the copy adds what only it keeps.
            rec.status = *recorded;
            rec.version = get(env_, bootenv::version(s.bootname));
            rec.securityVersion = number(get(env_, bootenv::securityVersion(s.bootname)));
            if (c != nullptr && c->version == rec.version) {
                rec.installed = c->installed;
                rec.operation = c->operation;
            }
            if (rec.status == SlotStatus::Empty && c != nullptr && c->status == SlotStatus::Staged) {
                rec = *c; // written by an arm=false install: its staging says so
            }
        } else if (c != nullptr) {
            // Written before the environment held the record: the copy is all there is.
            rec = *c;
            rec.onRecord = true;
            unrecorded.push_back(&s);
        } else if (s.name == booted) {
            // Nothing anywhere: the factory firmware runs (a trial always has its record).
            rec.status = SlotStatus::Good;
            rec.version = settings_.factoryVersion;
            unrecorded.push_back(&s);
        } else if (!bootable(s.bootname)) {
            // Nothing on record, and the bootloader cannot pick it: it holds nothing we need.
            unrecorded.push_back(&s);
        } else {
            rec.onRecord = false; // bootable and unknown: left exactly as it is
        }
        slots[s.name] = rec;
    }

    Started started;
    Changes changes;
    Env after = env_;
    // Observe the boot: an armed slot that booted is on trial; one the bootloader
    // no longer picks (no attempts left) was fallen back from.
    for (const auto& s : settings_.slots) {
        SlotRecord& rec = slots[s.name];
        if (rec.status != SlotStatus::Armed && rec.status != SlotStatus::Trial) {
            continue;
        }
        if (s.name == booted) {
            rec.status = SlotStatus::Trial;
            log::notice("booted slot " + s.name + " (version " + rec.version + ") is on trial; Commit or MarkBad");
        } else if (booted.empty() || firstBootable(after) == s.bootname) {
            rec.status = SlotStatus::Armed; // armed, the reboot has not come yet (or we cannot tell)
        } else {
            rec.status = SlotStatus::Bad;
            started.fellBack = s.name;
            started.fellBackVersion = rec.version;
            std::vector<std::string> order;
            for (const auto& bn : orderOf(after)) {
                if (bn != s.bootname) {
                    order.push_back(bn);
                }
            }
            Changes c{{bootenv::order(), str::join(order)}, {bootenv::left(s.bootname), std::string("0")}};
            recordChanges(s, rec, c);
            applyTo(after, c);
            for (const auto& [k, v] : c) {
                changes[k] = v;
            }
        }
    }
    // Records that were only in the copy (or the factory rule) go to the environment.
    for (const SlotConfig* s : unrecorded) {
        Changes c;
        recordChanges(*s, slots[s->name], c);
        applyTo(after, c);
        for (const auto& [k, v] : c) {
            changes[k] = v;
        }
    }
    // The floor is the highest of its copies; the environment's is raised to it.
    const std::uint64_t floor = std::max(copy.floor, number(get(after, bootenv::floor())));
    if (get(after, bootenv::floor()) != std::to_string(floor)) {
        changes[bootenv::floor()] = std::to_string(floor);
        after[bootenv::floor()] = std::to_string(floor);
    }
    // Mark-good on every start of a committed slot with nothing armed or on trial:
    // its attempts refilled, first in BOOT_ORDER (the boot script decrements on each boot).
    const bool pendingTrial = std::any_of(slots.begin(), slots.end(), [](const auto& kv) {
        return kv.second.status == SlotStatus::Armed || kv.second.status == SlotStatus::Trial;
    });
    const SlotConfig* b = slot(booted);
    if (b != nullptr && slots[b->name].status == SlotStatus::Good && !pendingTrial) {
        Changes c{{bootenv::order(), orderWith(after, slots, b->bootname)}};
        for (const auto& s : settings_.slots) {
            const SlotRecord& rec = slots[s.name];
            if (rec.status == SlotStatus::Good) {
                c[bootenv::left(s.bootname)] = std::to_string(settings_.goodAttempts);
            } else if (rec.onRecord) {
                c[bootenv::left(s.bootname)] = std::string("0");
            }
        }
        for (const auto& [k, v] : c) {
            if (get(after, k) != v.value_or("")) {
                changes[k] = v;
            }
        }
        applyTo(after, c);
    } else if (b != nullptr && slots[b->name].status != SlotStatus::Good && slots[b->name].status != SlotStatus::Trial) {
        log::warning("booted slot " + b->name + " is " + slotStatusName(slots[b->name].status) +
                     " on record; the boot order is left as it is");
    }
    if (auto st = writeEnv(changes); !st) {
        return unexpected(st.error());
    }
    std::lock_guard<std::mutex> l(viewMutex_);
    slots_ = std::move(slots);
    floor_ = floor;
    active_ = activeFrom(env_);
    return started;
}

Status BootPolicy::claim(const std::string& name)
{
    std::lock_guard<std::mutex> op(opMutex_);
    const SlotConfig* s = slot(name);
    if (s == nullptr || name == booted_) {
        return unexpected(ErrorCode::Failed, "slot '" + name + "' cannot be written (not configured, or booted)");
    }
    std::vector<std::string> order;
    for (const auto& bn : orderOf(env_)) {
        if (bn != s->bootname) {
            order.push_back(bn);
        }
    }
    SlotRecord after;
    Changes c{{bootenv::order(), str::join(order)}, {bootenv::left(s->bootname), std::string("0")}};
    recordChanges(*s, after, c);
    if (!slots_[name].onRecord) {
        // Nothing was on record: the table starts it from empty.
        std::lock_guard<std::mutex> l(viewMutex_);
        slots_[name] = SlotRecord{};
    }
    return step(name, SlotEvent::Claim, after, c);
}

Status BootPolicy::stage(const std::string& name, const SlotRecord& record)
{
    std::lock_guard<std::mutex> op(opMutex_);
    SlotRecord after = record;
    after.status = SlotStatus::Staged;
    after.onRecord = true;
    return step(name, SlotEvent::Stage, after, {});
}

Status BootPolicy::release(const std::string& name)
{
    std::lock_guard<std::mutex> op(opMutex_);
    return step(name, SlotEvent::Release, SlotRecord{}, {});
}

Status BootPolicy::arm(const std::string& name, const SlotRecord& record)
{
    std::lock_guard<std::mutex> op(opMutex_);
    const SlotConfig* s = slot(name);
    if (s == nullptr || name == booted_) {
        return unexpected(ErrorCode::Failed, "slot '" + name + "' cannot be armed (not configured, or booted)");
    }
    SlotRecord after = slots_[name].status == SlotStatus::Staged ? slots_[name] : record;
    after.status = SlotStatus::Armed;
    after.onRecord = true;
    std::map<std::string, SlotRecord> slots = slots_;
    slots[name] = after;
    Changes c{{bootenv::order(), orderWith(env_, slots, s->bootname)},
              {bootenv::left(s->bootname), std::to_string(settings_.trialAttempts)}};
    recordChanges(*s, after, c);
    return step(name, SlotEvent::Arm, after, c);
}

Expected<std::uint64_t> BootPolicy::commit()
{
    std::lock_guard<std::mutex> op(opMutex_);
    const SlotConfig* b = slot(booted_);
    if (b == nullptr) {
        return unexpected(ErrorCode::Failed, "cannot tell which slot is booted, so there is nothing to commit");
    }
    const SlotRecord cur = slots_[b->name];
    if (cur.status != SlotStatus::Trial) {
        for (const auto& [name, rec] : slots_) {
            if (rec.status == SlotStatus::Armed) {
                return unexpected(ErrorCode::InvalidArgument,
                                  "slot " + name + " is armed but not booted yet: reboot first, then Commit");
            }
        }
        if (cur.status == SlotStatus::Good) {
            return floor_; // committed already: Commit is idempotent
        }
        return unexpected(ErrorCode::InvalidArgument, "booted slot " + b->name + " is not on trial (state " +
                                                          slotStatusName(cur.status) + ")");
    }
    SlotRecord after = cur;
    after.status = SlotStatus::Good;
    std::map<std::string, SlotRecord> slots = slots_;
    slots[b->name] = after;
    const std::uint64_t floor = std::max(floor_, cur.securityVersion);
    Changes c{{bootenv::order(), orderWith(env_, slots, b->bootname)},
              {bootenv::left(b->bootname), std::to_string(settings_.goodAttempts)},
              {bootenv::floor(), std::to_string(floor)}};
    recordChanges(*b, after, c);
    if (auto st = step(b->name, SlotEvent::Commit, after, c); !st) {
        return unexpected(st.error());
    }
    std::lock_guard<std::mutex> l(viewMutex_);
    floor_ = floor;
    return floor;
}

Expected<std::string> BootPolicy::markBad()
{
    std::lock_guard<std::mutex> op(opMutex_);
    const SlotConfig* target = nullptr;
    const SlotConfig* b = slot(booted_);
    if (b != nullptr && slots_[b->name].status == SlotStatus::Trial) {
        target = b;
    }
    for (const auto& s : settings_.slots) {
        if (target == nullptr && slots_[s.name].status == SlotStatus::Armed) {
            target = &s;
        }
    }
    if (target == nullptr) {
        return unexpected(ErrorCode::InvalidArgument, "no slot is on trial or armed: MarkBad abandons a trial");
    }
    SlotRecord after = slots_[target->name];
    after.status = SlotStatus::Bad;
    after.operation.clear();
    std::vector<std::string> order;
    for (const auto& bn : orderOf(env_)) {
        if (bn != target->bootname) {
            order.push_back(bn);
        }
    }
    Changes c{{bootenv::order(), str::join(order)}, {bootenv::left(target->bootname), std::string("0")}};
    recordChanges(*target, after, c);
    if (auto st = step(target->name, SlotEvent::MarkBad, after, c); !st) {
        return unexpected(st.error());
    }
    return target->name;
}

} // namespace mbl::update
