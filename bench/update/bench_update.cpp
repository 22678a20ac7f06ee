// SPDX-License-Identifier: Apache-2.0
// Benchmark of mbl-update against the bare tools, in the same run:
//   bare:    openssl dgst -sha256 IMG  +  dd if=IMG of=SLOT bs=1M conv=fsync,notrunc
//   install: Install(fd of the bundle) over the bus, streaming, hashing through EVP,
//            writing the inactive slot, fsync, read-back hash, arm the bootloader
// for 256 MiB and 1 GiB rootfs images; the daemon's peak RSS (VmHWM) for each
// size on a fresh daemon; and the time to Inspect (signature check) a bundle.
// Usage: bench-update [SIZE_MiB ...]   (default: 256 1024)

#include "harness.h"

#include "mbl/dbus/bus.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstdio>
#include <fcntl.h>
#include <iostream>
#include <mutex>
#include <unistd.h>

using namespace mbl;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kIface = "org.mbl.Update1";

void must(const std::vector<std::string>& argv)
{
    auto r = run(argv);
    if (!r || !r->status.success()) {
        std::cerr << "bench-update: " << argv[0] << " failed: " << (r ? r->err : r.error().message) << "\n";
        std::exit(1);
    }
}

double seconds(Clock::time_point a, Clock::time_point b)
{
    return std::chrono::duration<double>(b - a).count();
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

std::uint64_t vmHwmKiB(pid_t pid)
{
    auto t = fs::readFile("/proc/" + std::to_string(pid) + "/status");
    if (!t) {
        return 0;
    }
    for (const auto& line : str::split(*t, '\n')) {
        if (str::startsWith(line, "VmHWM:")) {
            return std::stoull(str::trim(line.substr(6)));
        }
    }
    return 0;
}

void makePki(const std::string& d)
{
    auto req = [&](const std::vector<std::string>& a) {
        std::vector<std::string> argv{"openssl"};
        argv.insert(argv.end(), a.begin(), a.end());
        must(argv);
    };
    req({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/ca.key",
         "-out", d + "/ca.pem", "-days", "30", "-subj", "/CN=Bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"});
    req({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", d + "/s.key", "-out",
         d + "/s.csr", "-subj", "/CN=Bench Signer"});
    (void)fs::writeFileAtomic(d + "/s.ext", "keyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n");
    req({"x509", "-req", "-in", d + "/s.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key", "-CAcreateserial", "-out",
         d + "/s.pem", "-days", "30", "-extfile", d + "/s.ext"});
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::uint64_t> sizes;
    for (int i = 1; i < argc; ++i) {
        sizes.push_back(std::stoull(argv[i]));
    }
    if (sizes.empty()) {
        sizes = {256, 1024};
    }
    // Rounds alternate bare and install; BENCH_ROUNDS overrides the default 5.
    const char* roundsEnv = std::getenv("BENCH_ROUNDS");
    const int rounds = roundsEnv != nullptr ? std::max(1, std::atoi(roundsEnv)) : 5;
    test::TempDir work("mbl-bench-update");
    const std::string w = work.path();
    makePki(w);
    const std::string bundleTool = test::buildRoot() + "/services/mbl-bundle/mbl-bundle";

    std::printf("%-8s %-34s %10s %10s\n", "size", "what", "median s", "MB/s");
    for (std::uint64_t mib : sizes) {
        const std::uint64_t bytes = mib << 20;
        const std::string img = w + "/rootfs.img";
        const std::string bundle = w + "/fw.bundle";
        must({"openssl", "rand", "-out", img, std::to_string(bytes)});
        must({bundleTool, "create", "--key", w + "/s.key", "--cert", w + "/s.pem", "--version", "2.0.0",
              "--security-version", "1", "--compatible", "bench-board", "--rootfs", img, "-o", bundle});

        const std::string slotA = w + "/slot-a.img";
        const std::string slotB = w + "/slot-b.img";
        // Slots are written like partitions: allocated up front (zero-filled, as a block
        // device is), overwritten in place (dd conv=notrunc); then everything is synced
        // so neither side pays for the other's or the setup's dirty pages.
        const std::string bareSlot = w + "/bare-slot.img";
        for (const auto& f : {slotA, slotB, bareSlot}) {
            must({"dd", "if=/dev/zero", "of=" + f, "bs=1M", "count=" + std::to_string(mib), "conv=fsync", "status=none"});
        }
        must({"sync"});
        // Both settings of readBack, each against its own interleaved bare rounds.
        for (bool readBack : {true, false}) {
            // The daemon, on a fresh state and bootloader environment.
            ::unlink((w + "/bootenv").c_str());
            test::TestStack stack;
            const std::string root = stack.root();
            (void)fs::makeDirs(root + "/etc/mbl/trust");
            (void)fs::writeFileAtomic(root + "/etc/mbl/trust/ca.pem", *fs::readFile(w + "/ca.pem"));
            nlohmann::json cfg = {{"compatible", "bench-board"},
                                  {"bootedSlot", "a"},
                                  {"bootloader", {{"type", "file"}, {"path", w + "/bootenv"}}},
                                  {"readBack", readBack},
                                  {"slots", {{{"name", "a"}, {"device", slotA}}, {{"name", "b"}, {"device", slotB}}}}};
            (void)fs::writeFileAtomic(root + "/etc/mbl/update.json", cfg.dump());
            if (auto st = stack.start("update"); !st) {
                std::cerr << "bench-update: " << st.error().message << "\n";
                return 1;
            }
            const std::uint64_t idleHwm = vmHwmKiB(stack.pid("update"));
            auto conn = dbus::connectSystemBus();
            auto proxy = sdbus::createProxy(*conn, "org.mbl.Update1", "/org/mbl/Update1");
            std::mutex m;
            std::condition_variable cv;
            std::map<std::string, std::pair<bool, std::string>> done;
            proxy->uponSignal("Completed")
                .onInterface(kIface)
                .call([&](const std::string& id, bool ok, const std::string& name, const std::string& msg) {
                    std::lock_guard<std::mutex> l(m);
                    done[id] = {ok, name + ": " + msg};
                    cv.notify_all();
                });
            proxy->finishRegistration();
            conn->enterEventLoopAsync();
            // Rounds alternate bare and install so both see the same machine load.
            std::vector<double> bare;
            std::vector<double> inst;
            for (int r = 0; r < rounds; ++r) {
                {
                    const auto t0 = Clock::now();
                    must({"openssl", "dgst", "-sha256", img});
                    must({"dd", "if=" + img, "of=" + bareSlot, "bs=1M", "conv=fsync,notrunc", "status=none"});
                    bare.push_back(seconds(t0, Clock::now()));
                }
                Fd fd(::open(bundle.c_str(), O_RDONLY | O_CLOEXEC));
                const auto t0 = Clock::now();
                std::string id;
                proxy->callMethod("Install")
                    .onInterface(kIface)
                    .withArguments(sdbus::UnixFd(fd.get()), std::map<std::string, sdbus::Variant>{})
                    .storeResultsTo(id);
                std::unique_lock<std::mutex> l(m);
                cv.wait(l, [&] { return done.count(id) > 0; });
                inst.push_back(seconds(t0, Clock::now()));
                if (!done[id].first) {
                    std::cerr << "bench-update: install failed: " << done[id].second << "\n";
                    return 1;
                }
            }
            const std::uint64_t hwm = vmHwmKiB(stack.pid("update"));
            std::vector<double> insp;
            for (int r = 0; r < 20; ++r) {
                Fd fd(::open(bundle.c_str(), O_RDONLY | O_CLOEXEC));
                const auto t0 = Clock::now();
                std::string manifest;
                proxy->callMethod("Inspect").onInterface(kIface).withArguments(sdbus::UnixFd(fd.get())).storeResultsTo(manifest);
                insp.push_back(seconds(t0, Clock::now()));
            }
            proxy.reset();
            conn->leaveEventLoop();
            // The daemon's own split of the last install (stream+write+sync, then the read-back tail).
            std::string split;
            for (const auto& line : str::split(stack.log("update"), '\n')) {
                if (line.find("bytes streamed") != std::string::npos || line.find("install timing") != std::string::npos) {
                    split = line.find("bytes streamed") != std::string::npos ? line : split + "\n         " + line;
                }
            }

            const double mb = static_cast<double>(bytes) / 1e6;
            const std::string sz = std::to_string(mib) + "M";
            std::printf("%-8s %-34s %10.3f %10.0f\n", sz.c_str(), "bare: openssl dgst + dd conv=fsync", median(bare),
                        mb / median(bare));
            std::printf("%-8s %-34s %10.3f %10.0f\n", sz.c_str(),
                        readBack ? "Install, readBack on (default)" : "Install, readBack off", median(inst),
                        mb / median(inst));
            std::printf("%-8s %-34s %10.2f\n", sz.c_str(), "ratio install/bare throughput", median(bare) / median(inst));
            std::printf("%-8s %-34s %10.2f ms\n", sz.c_str(), "Inspect (signature check) median", median(insp) * 1000);
            std::printf("%-8s %-34s %7llu KiB idle, %llu KiB peak\n", sz.c_str(), "daemon VmHWM",
                        static_cast<unsigned long long>(idleHwm), static_cast<unsigned long long>(hwm));
            if (!split.empty()) {
                std::printf("%-8s last install: %s\n", sz.c_str(), split.c_str());
            }
            std::fflush(stdout);
        }
        ::unlink(slotA.c_str());
        ::unlink(slotB.c_str());
        ::unlink(bareSlot.c_str());
    }
    return 0;
}
