// SPDX-License-Identifier: Apache-2.0
#pragma once
// The container manager's unit as systemd runs it
// (services/systemd/mbl-container-manager.service.in), a test double that
// behaves as systemd.service(5), systemd.resource-control(5) and sd_notify(3)
// define it:
//   Type=notify   NOTIFY_SOCKET names an AF_UNIX datagram socket; the service
//                 sends newline-separated assignments to it (READY=1,
//                 STATUS=..., STOPPING=1, MAINPID=...), one datagram each.
//   Delegate=yes  the main process starts in the unit's own cgroup
//                 (<slice>/mbl-container-manager.service), and what is below
//                 it is the service's to manage. systemd keeps that cgroup in
//                 the cgroup v2 hierarchy, and on a hybrid or legacy system in
//                 its name=systemd hierarchy too.
// Each unit gets a slice of its own (mbl-it-<pid>-<n>.slice), removed with
// everything below it in every hierarchy when the unit goes (after the
// manager and its containers): tests leave no cgroup folder behind.

#include "harness.h"

#include <catch2/catch.hpp>

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace mbl::test::cm {

struct CgroupHierarchy {
    std::string mount;
    bool unitLives = false; // systemd keeps units' cgroups here (v2, name=systemd)
    bool v2 = false;
};

inline std::vector<CgroupHierarchy> cgroupHierarchies()
{
    std::vector<CgroupHierarchy> out;
    auto mi = fs::readFile("/proc/self/mountinfo", 4u << 20);
    for (const auto& line : str::split(mi ? *mi : "", '\n')) {
        const auto dash = line.find(" - ");
        if (dash == std::string::npos) {
            continue;
        }
        const auto left = str::split(line.substr(0, dash), ' ');
        const auto right = str::split(line.substr(dash + 3), ' ');
        if (left.size() < 5 || right.size() < 3 || left[3] != "/") {
            continue;
        }
        if (right[0] == "cgroup2") {
            out.push_back({left[4], true, true});
        } else if (right[0] == "cgroup") {
            out.push_back({left[4], right[2].find("name=systemd") != std::string::npos, false});
        }
    }
    return out;
}

// The cgroup of a process in the hierarchy systemd delegates in: the
// name=systemd line of /proc/PID/cgroup on a hybrid or legacy system, else "0::".
inline std::string cgroupOf(pid_t pid)
{
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/cgroup");
    std::string v2;
    for (const auto& line : str::split(text ? *text : "", '\n')) {
        if (str::startsWith(line, "0::")) {
            v2 = line.substr(3);
        }
        const auto p = line.find(":name=systemd:");
        if (p != std::string::npos) {
            return line.substr(p + 14);
        }
    }
    return v2;
}

inline bool isDirectory(const std::string& p)
{
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// rmdir bottom-up; true when `dir` is gone.
inline bool removeCgroupTree(const std::string& dir)
{
    if (!isDirectory(dir)) {
        return true;
    }
    if (DIR* d = ::opendir(dir.c_str())) {
        std::vector<std::string> subs;
        while (dirent* e = ::readdir(d)) {
            if (e->d_type == DT_DIR && std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
                subs.push_back(dir + "/" + e->d_name);
            }
        }
        ::closedir(d);
        for (const auto& s : subs) {
            (void)removeCgroupTree(s);
        }
    }
    return ::rmdir(dir.c_str()) == 0 || errno == ENOENT;
}

class SystemdUnit {
public:
    SystemdUnit()
    {
        static std::atomic<int> counter{0};
        slice_ = "/mbl-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".slice";
        cgroup_ = slice_ + "/mbl-container-manager.service";
        auto own = fs::readFile("/proc/self/cgroup");
        for (const auto& h : cgroupHierarchies()) {
            if (h.unitLives) {
                // Where this process is in that hierarchy, to come back to.
                for (const auto& line : str::split(own ? *own : "", '\n')) {
                    if ((h.v2 && str::startsWith(line, "0::")) || (!h.v2 && line.find(":name=systemd:") != std::string::npos)) {
                        home_.push_back(h.mount + line.substr(line.find(':', line.find(':') + 1) + 1));
                    }
                }
                const std::string dir = h.mount + cgroup_;
                if (!fs::makeDirs(dir, 0755)) {
                    why_ = "cannot make the unit's cgroup " + dir + " (cgroupfs is not writable here)";
                    return;
                }
                dirs_.push_back(dir);
            }
        }
        if (dirs_.empty()) {
            why_ = "no cgroup hierarchy is mounted here";
            return;
        }
        notifyPath_ = dir_.path() + "/notify";
        notify_ = Fd{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)};
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, notifyPath_.c_str(), sizeof a.sun_path - 1);
        if (!notify_ || ::bind(notify_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            why_ = "cannot bind a notify socket at " + notifyPath_;
        }
        ::chmod(notifyPath_.c_str(), 0777);
    }
    ~SystemdUnit()
    {
        // The unit's processes (shims finishing after their containers were
        // deleted) leave; then the slice goes from every hierarchy.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        for (const auto& h : cgroupHierarchies()) {
            while (!removeCgroupTree(h.mount + slice_) && std::chrono::steady_clock::now() < deadline) {
                // Teardown pacing while the last shims exit; nothing is checked after it.
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        }
    }
    SystemdUnit(const SystemdUnit&) = delete;
    SystemdUnit& operator=(const SystemdUnit&) = delete;

    // Runs `start` (which spawns the manager) with this process in the unit's
    // cgroup, so that the manager starts there as systemd starts a unit's main
    // process; this process is back where it was before `start` returns.
    template <typename F>
    auto startIn(F start)
    {
        join(dirs_);
        struct Back {
            SystemdUnit* u;
            ~Back() { u->join(u->home_); }
        } back{this};
        return start();
    }
    // "" when the unit can be emulated here, else why not.
    const std::string& unavailable() const { return why_; }
    // The unit's cgroup path ("/mbl-it-....slice/mbl-container-manager.service").
    const std::string& cgroup() const { return cgroup_; }
    // Its folders (for StartOptions::cgroups) and environment.
    const std::vector<std::string>& dirs() const { return dirs_; }
    std::vector<std::string> env() const { return {"NOTIFY_SOCKET=" + notifyPath_}; }

    // Every assignment received so far (READY=1, MAINPID=..., ...), in order.
    std::vector<std::string> messages()
    {
        char buf[4096];
        while (true) {
            const ssize_t n = ::recv(notify_.get(), buf, sizeof buf, 0);
            if (n <= 0) {
                break;
            }
            for (const auto& l : str::split(std::string(buf, static_cast<std::size_t>(n)), '\n')) {
                if (!l.empty()) {
                    received_.push_back(l);
                }
            }
        }
        return received_;
    }
    // Waits until an assignment `text` arrives (or came before).
    bool waitMessage(const std::string& text, std::chrono::milliseconds timeout = std::chrono::seconds(30))
    {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (true) {
            for (const auto& m : messages()) {
                if (m == text) {
                    return true;
                }
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return false;
            }
            pollfd p{notify_.get(), POLLIN, 0};
            (void)::poll(&p, 1, static_cast<int>(left.count()));
        }
    }

private:
    TempDir dir_{"mbl-unit"};
    std::string slice_;
    std::string cgroup_;
    std::vector<std::string> dirs_;
    std::string notifyPath_;
    Fd notify_;
    void join(const std::vector<std::string>& dirs)
    {
        const std::string pid = std::to_string(::getpid()) + "\n";
        for (const auto& d : dirs) {
            Fd fd{::open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC)};
            if (!fd || !fs::writeAll(fd.get(), pid.data(), pid.size())) {
                FAIL_CHECK("cannot join the cgroup " + d + ": " + std::strerror(errno));
            }
        }
    }

    std::vector<std::string> received_;
    std::vector<std::string> home_;
    std::string why_;
};

} // namespace mbl::test::cm
