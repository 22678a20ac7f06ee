// SPDX-License-Identifier: Apache-2.0
// The shim started ahead of time (taken by a start, refilled in the background).

#include "container_manager.h"
#include "manager_internal.h"

#include "mbl/log.h"

namespace mbl::containers {

Expected<Runtime::WaitingShim> ContainerManager::takeShim()
{
    {
        std::lock_guard<std::mutex> lock(shimMutex_);
        if (waitingShim_) {
            Runtime::WaitingShim w = std::move(*waitingShim_);
            waitingShim_.reset();
            return w;
        }
    }
    return Runtime::spawnShim(shimPath_);
}

void ContainerManager::refillShim()
{
    diskQueue_.post([this] {
        auto w = Runtime::spawnShim(shimPath_);
        if (!w) {
            log::warning("cannot start " + shimPath_ + ": " + w.error().message);
            return;
        }
        std::lock_guard<std::mutex> lock(shimMutex_);
        if (!waitingShim_) {
            waitingShim_ = std::move(w).value();
        }
    });
}

} // namespace mbl::containers
