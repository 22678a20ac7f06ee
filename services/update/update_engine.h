#pragma once
// The update engine: bundle verification, A/B slots, bootloader trial and
// commit, and the anti-rollback floor. No bus code here: the adaptor calls
// these from its worker threads and reads snapshots for its properties.

#include "boot_policy.h"
#include "bundle.h"

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/fd.h"
#include "mbl/paths.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace mbl::update {

// A slot as SlotStates shows it.
struct SlotState {
    std::string state = "empty"; // good | bad | trial (armed or booted) | staged | empty
    std::string version;
    std::uint64_t installed = 0;
    std::uint64_t securityVersion = 0;
    std::string operation; // staged: the operation that wrote it (Arm/Release name it)
};

// Install options (Update1.Install's a{sv}).
struct InstallOptions {
    // false: verify, write the slot and stage the payloads, but leave the
    // bootloader alone; the operation is held until Release, Arm arms its slot.
    bool arm = true;
};

struct Snapshot {
    std::string bootedSlot;
    std::string activeSlot;
    std::string firmwareVersion;
    std::uint64_t floor = 0;
    std::string lastError;
    std::vector<std::pair<std::string, SlotState>> slots;
};

class UpdateEngine {
public:
    static Expected<std::unique_ptr<UpdateEngine>> open(const Paths& paths, const Config& config);

    const std::string& stateDir() const { return stateDir_; }
    const std::string& compatible() const { return compatible_; }

    // Signature, compatibility and floor checks of a bundle's head; writes nothing.
    Expected<std::string> inspect(int fd, const std::atomic<bool>* cancel);

    // At most one mutating operation at a time (Install, Commit, MarkBad).
    bool tryBegin();
    void end();
    static std::string newOperationId();

    // Streams and installs a bundle (runs on a worker; tryBegin() first).
    using ProgressFn = std::function<void(unsigned percent)>;
    Status install(int fd, const std::string& operationId, const std::atomic<bool>* cancel, const ProgressFn& progress,
                   const InstallOptions& options = {});
    // Arms the slot an operation installed with arm=false wrote (tryBegin() first).
    // NotFound if the operation wrote no slot or its staging is gone; idempotent.
    Status arm(const std::string& operationId);
    // Drops an operation's staging (payloads, manifest, unarmed slot); idempotent.
    // Busy for the operation being installed. Needs no tryBegin().
    Status release(const std::string& operationId);
    Status commit();
    Status markBad();
    // A staged app/config/file payload of a completed, held install, read-only.
    Expected<Fd> openPayload(const std::string& operationId, const std::string& name);
    // The verified manifest of a completed, held install (JSON).
    Expected<std::string> operationManifest(const std::string& operationId);
    // Starts with a dot: never a valid payload name, so OpenPayload cannot return it.
    static constexpr const char* kManifestFile = ".manifest.json";

    Snapshot snapshot() const;
    void setLastError(const std::string& text);

private:
    UpdateEngine() = default;
    struct VerifiedHead {
        bundle::Manifest manifest;
        bundle::SignerInfo signer;
    };
    // Reads and verifies manifest and signature, then the device policy.
    Expected<VerifiedHead> verifyHead(bundle::Reader& r);
    // Reads state.json: the held operations, the last error, and the copy of the
    // slot records and floor the boot policy merges with the environment.
    Status loadState(BootPolicy::Copy& copy);
    Status saveStateLocked();
    Status recover(const BootPolicy::Copy& copy);
    std::string detectBootedSlot() const;
    const SlotConfig* slot(const std::string& name) const;
    const SlotConfig* inactiveSlot() const;
    void wipeHead(const SlotConfig& s) const;
    Status stagePayload(bundle::Reader& r, const bundle::Payload& p, const std::string& dir,
                        const std::function<void(std::uint64_t)>& advanced);
    void pausePoint(const char* name) const;
    Status installLocked(int fd, const std::string& operationId, const std::atomic<bool>* cancel,
                         const ProgressFn& progress, const InstallOptions& options);
    // Drops an operation's staging directory and record (mutex_ held).
    void dropOperationLocked(const std::string& operationId);

    // Configuration.
    std::string stateDir_;
    std::string stagingDir_;
    std::string trustDir_;
    std::string compatible_;
    std::string factoryVersion_;
    std::string cmdlinePath_;
    std::string bootedOverride_;
    std::string slotClass_;
    std::uint64_t maxManifestBytes_ = bundle::kDefaultMaxManifestBytes;
    int trialAttempts_ = 1;
    int goodAttempts_ = 3;
    bool readBack_ = true;
    bool noDirect_ = false;
    std::vector<SlotConfig> slots_;
    // The slot states and every bootloader environment write.
    std::unique_ptr<BootPolicy> policy_;
    std::string booted_;
    std::string pause_;

    // Held while the engine's own state (state.json, staging) changes; may be held
    // across file writes, so snapshot() does not take it.
    std::mutex mutex_;
    // Completed installs whose staging (payloads, manifest, slot) is kept.
    struct HeldOperation {
        // true (arm=false): kept until Release; false (arm=true, as before C2):
        // kept until Release or the start of the next Install.
        bool hold = false;
        std::string slot; // the slot it wrote, "" for none
    };
    std::map<std::string, HeldOperation> operations_;
    std::string runningOperation_;
    // Serialises what writes a slot device: an install with a rootfs (from its
    // preflight to its end), Arm and Release. Taken before mutex_.
    std::mutex slotMutex_;
    mutable std::mutex errorMutex_; // guards lastError_ only (read by snapshot())
    std::string lastError_;
    std::atomic<bool> busy_{false};
};

} // namespace mbl::update
