#pragma once
// The update engine: bundle verification, A/B slots, bootloader trial and
// commit, and the anti-rollback floor. No bus code here: the adaptor calls
// these from its worker threads and reads snapshots for its properties.

#include "bootloader.h"
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

struct SlotConfig {
    std::string name;     // "a"
    std::string device;   // block device or image file
    std::string bootname; // name in the bootloader environment ("A")
    std::uint64_t size = 0; // 0: the device's size
};

struct SlotState {
    std::string state = "empty"; // good | bad | trial | staged | empty
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
    Status loadState();
    Status saveStateLocked();
    Status recover();
    std::string detectBootedSlot() const;
    std::string readBootId() const;
    const SlotConfig* slot(const std::string& name) const;
    const SlotConfig* inactiveSlot() const;
    std::string activeSlotFrom(const std::map<std::string, std::string>& env) const;
    Expected<std::uint64_t> slotCapacity(const SlotConfig& s) const;
    Status disarm(const SlotConfig& s);
    // Zeroes the first MiB of a slot that holds a partial or refused image, so no
    // file system or kernel header of it survives to be mounted or booted by hand.
    Status wipeHead(const SlotConfig& s);
    Status writeRootfs(bundle::Reader& r, const bundle::Payload& p, const SlotConfig& target,
                       const std::function<void(std::uint64_t)>& advanced);
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
    std::string bootIdPath_;
    std::string bootedOverride_;
    std::string slotClass_;
    std::uint64_t maxManifestBytes_ = bundle::kDefaultMaxManifestBytes;
    int trialAttempts_ = 1;
    int goodAttempts_ = 3;
    bool readBack_ = true;
    bool noDirect_ = false;
    std::vector<SlotConfig> slots_;
    std::unique_ptr<Bootloader> bootloader_;
    std::string pause_;

    // Persistent state (state.json) and what the engine derived at start.
    mutable std::mutex mutex_;
    std::uint64_t floor_ = 0;
    std::map<std::string, SlotState> slotStates_;
    struct Pending {
        std::string slot;
        std::string version;
        std::uint64_t securityVersion = 0;
        std::string bootId;
        std::string operation;
    };
    std::optional<Pending> pending_;
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
    std::string lastError_;
    std::string booted_;
    std::string active_;
    std::atomic<bool> busy_{false};
};

} // namespace mbl::update
