// SPDX-License-Identifier: Apache-2.0
// App logs: GetLogs and the rotation of logs no shim writes.

#include "container_manager.h"
#include "manager_internal.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::containers {

Expected<std::string> ContainerManager::logs(const std::string& name, std::uint32_t lines) const
{
    if (find(name) == nullptr && !fs::exists(logPath(name))) {
        return unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed");
    }
    std::string text;
    if (auto older = fs::readFile(logPath(name) + ".1", 64u << 20)) {
        text = *older;
    }
    if (auto cur = fs::readFile(logPath(name), 64u << 20)) {
        text += *cur;
    }
    if (lines == 0) {
        return text;
    }
    std::size_t pos = text.size();
    if (pos > 0 && text[pos - 1] == '\n') {
        --pos;
    }
    std::uint32_t seen = 0;
    while (pos > 0) {
        if (text[pos - 1] == '\n' && ++seen == lines) {
            break;
        }
        --pos;
    }
    return text.substr(pos);
}

void ContainerManager::watchLogs()
{
    inotify_ = Fd{::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)};
    if (!inotify_ || ::inotify_add_watch(inotify_.get(), logDir_.c_str(), IN_MODIFY) < 0) {
        log::warning("cannot watch the app logs for rotation: " + std::string(std::strerror(errno)));
        return;
    }
    loop_.watchFd(inotify_.get(), POLLIN, [this](short) {
        alignas(struct inotify_event) char buf[8192];
        std::vector<std::string> names;
        while (true) {
            ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            for (char* p = buf; p < buf + n;) {
                auto* ev = reinterpret_cast<struct inotify_event*>(p);
                if (ev->len > 0) {
                    std::string fname = ev->name;
                    if (str::endsWith(fname, ".log") &&
                        std::find(names.begin(), names.end(), fname) == names.end()) {
                        names.push_back(fname);
                    }
                }
                p += sizeof(struct inotify_event) + ev->len;
            }
        }
        for (const auto& f : names) {
            rotateLogs(f);
        }
    });
}

void ContainerManager::rotateLogs(const std::string& fileName)
{
    const std::string path = logDir_ + "/" + fileName;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) <= config_.logMaxBytes) {
        return;
    }
    const App* a = find(fileName.substr(0, fileName.size() - 4));
    const bool running = a != nullptr && (a->pid > 0 || (a->state == AppState::Starting));
    if (running && (a->shimPid > 0 || ((a->state == AppState::Starting) && !shimPath_.empty()))) {
        return; // its shim is the log's writer and rotates it
    }
    auto shift = [&] {
        for (std::uint32_t i = config_.logKeep; i > 1; --i) {
            ::rename((path + "." + std::to_string(i - 1)).c_str(), (path + "." + std::to_string(i)).c_str());
        }
    };
    if (!running) {
        // Only the manager writes it (one open per line, by path): a rename loses nothing.
        if (config_.logKeep == 0) {
            (void)::truncate(path.c_str(), 0);
            return;
        }
        shift();
        ::rename(path.c_str(), (path + ".1").c_str());
        return;
    }
    // Without a shim (start_mode "create-start") the container writes straight to
    // the O_APPEND file: copy and truncate. Lines written between the copy and the
    // truncate are lost; the shim's rotation (the default) never loses one.
    shift();
    if (config_.logKeep > 0) {
        Fd in{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
        Fd out{::open((path + ".1").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)};
        char buf[65536];
        ssize_t n = 0;
        while (in && out && (n = ::read(in.get(), buf, sizeof buf)) > 0) {
            (void)fs::writeAll(out.get(), buf, static_cast<std::size_t>(n));
        }
    }
    if (::truncate(path.c_str(), 0) != 0) {
        log::warning("cannot truncate " + path + ": " + std::strerror(errno));
    }
}

} // namespace mbl::containers
