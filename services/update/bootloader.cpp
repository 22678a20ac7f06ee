// SPDX-License-Identifier: Apache-2.0
#include "bootloader.h"

#include "grubenv.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <random>
#include <unistd.h>

namespace mbl::update {

namespace {

std::map<std::string, std::string> parseLines(const std::string& text)
{
    std::map<std::string, std::string> out;
    for (const auto& line : str::split(text, '\n')) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        auto eq = line.find('=');
        if (eq == std::string::npos) {
            continue;
        }
        out[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return out;
}

Status validName(const std::string& k, const std::optional<std::string>& v)
{
    if (k.empty() || k.find_first_of("=\n ") != std::string::npos ||
        (v && v->find('\n') != std::string::npos)) {
        return unexpected(ErrorCode::InvalidArgument, "bad bootloader variable '" + k + "'");
    }
    return {};
}

Status toolFailed(const std::string& tool, const Expected<RunResult>& r)
{
    if (!r) {
        return unexpected(ErrorCode::Io, "cannot run " + tool + ": " + r.error().message);
    }
    return unexpected(ErrorCode::Io, tool + " failed (" + r->status.describe() + "): " + str::trim(r->err));
}

// Development backend: KEY=VALUE lines, replaced atomically.
class FileBootloader final : public Bootloader {
public:
    explicit FileBootloader(std::string path) : path_(std::move(path)) {}
    Expected<std::map<std::string, std::string>> read() override
    {
        if (!fs::exists(path_)) {
            return std::map<std::string, std::string>{};
        }
        auto t = fs::readFile(path_, 1u << 20);
        if (!t) {
            return unexpected(t.error());
        }
        return parseLines(*t);
    }
    Status write(const std::map<std::string, std::optional<std::string>>& changes) override
    {
        auto cur = read();
        if (!cur) {
            return unexpected(cur.error());
        }
        for (const auto& [k, v] : changes) {
            if (auto st = validName(k, v); !st) {
                return st;
            }
            if (v) {
                (*cur)[k] = *v;
            } else {
                cur->erase(k);
            }
        }
        std::string text;
        for (const auto& [k, v] : *cur) {
            text += k + "=" + v + "\n";
        }
        return fs::writeFileAtomic(path_, text, 0644);
    }
    std::string describe() const override { return "file " + path_; }

private:
    std::string path_;
};

// U-Boot environment through libubootenv's tools; fw_setenv -s writes all
// changes in one environment write. Power-cut safety comes from the redundant
// environment (two lines in fw_env.config, as the device layout has them:
// services/systemd/fw_env.config.example): libubootenv writes the copy not in
// use with the current flag + 1 and syncs it, leaving the current copy alone,
// so a cut leaves the old copy current or the new one, each with a good CRC;
// the boot script (u-boot/mbl-ab.cmd) follows the same rule. With a single
// copy the write is in place: a cut can leave a bad CRC, and the boot script
// then boots its factory environment. So a single copy is named at start-up.
class UbootBootloader final : public Bootloader {
public:
    explicit UbootBootloader(BootloaderConfig c) : c_(std::move(c))
    {
        auto text = fs::readFile(c_.path, 65536);
        if (!text) {
            return; // fw_printenv says what is wrong on the first read
        }
        int copies = 0;
        for (const auto& line : str::split(*text, '\n')) {
            const std::string l = str::trim(line);
            copies += !l.empty() && l[0] != '#' ? 1 : 0;
        }
        if (copies < 2) {
            log::warning(c_.path + " names one U-Boot environment copy: a power cut during fw_setenv can leave it "
                                   "with a bad CRC, and U-Boot then boots its factory environment; name both copies "
                                   "of the redundant environment (/etc/mbl/fw_env.config.example)");
        }
    }
    Expected<std::map<std::string, std::string>> read() override
    {
        auto r = run({c_.fwPrintenv, "-c", c_.path});
        if (r && !r->status.success() && !c_.defaults.empty() &&
            r->err.find("Cannot read environment") != std::string::npos) {
            // A blank environment (fresh board): what fw_setenv -f would start from.
            auto d = fs::readFile(c_.defaults);
            if (!d) {
                return unexpected(d.error());
            }
            return parseLines(*d);
        }
        if (!r || !r->status.success()) {
            return unexpected(toolFailed("fw_printenv", r).error());
        }
        return parseLines(r->out);
    }
    Status write(const std::map<std::string, std::optional<std::string>>& changes) override
    {
        std::string script;
        for (const auto& [k, v] : changes) {
            if (auto st = validName(k, v); !st) {
                return st;
            }
            script += k + "=" + v.value_or("") + "\n";
        }
        std::random_device rd;
        const std::string tmp = "/tmp/mbl-update-fwenv." + std::to_string(::getpid()) + "." + std::to_string(rd());
        if (auto st = fs::writeFileAtomic(tmp, script, 0600); !st) {
            return st;
        }
        std::vector<std::string> argv{c_.fwSetenv, "-c", c_.path};
        if (!c_.defaults.empty()) {
            argv.insert(argv.end(), {"-f", c_.defaults});
        }
        argv.insert(argv.end(), {"-s", tmp});
        auto r = run(argv);
        ::unlink(tmp.c_str());
        if (!r || !r->status.success()) {
            return toolFailed("fw_setenv", r);
        }
        return {};
    }
    std::string describe() const override { return "U-Boot environment (" + c_.path + ")"; }

private:
    BootloaderConfig c_;
};

// GRUB environment block: read with grub-editenv, written by grubenv.cpp.
class GrubBootloader final : public Bootloader {
public:
    explicit GrubBootloader(BootloaderConfig c) : c_(std::move(c)) {}
    Expected<std::map<std::string, std::string>> read() override
    {
        if (!fs::exists(c_.path)) {
            return std::map<std::string, std::string>{};
        }
        auto r = run({c_.grubEditenv, c_.path, "list"});
        if (!r || !r->status.success()) {
            return unexpected(toolFailed("grub-editenv", r).error());
        }
        return parseLines(r->out);
    }
    // One write of the whole block, power-cut safe (grubenv.h); never through
    // grub-editenv, which truncates the file before writing it again.
    Status write(const std::map<std::string, std::optional<std::string>>& changes) override
    {
        auto cur = read();
        if (!cur) {
            return unexpected(cur.error());
        }
        for (const auto& [k, v] : changes) {
            if (auto st = validName(k, v); !st) {
                return st;
            }
            if (v) {
                (*cur)[k] = *v;
            } else {
                cur->erase(k);
            }
        }
        return grubenv::write(c_.path, *cur);
    }
    std::string describe() const override { return "GRUB environment (" + c_.path + ")"; }

private:
    BootloaderConfig c_;
};

} // namespace

Expected<std::unique_ptr<Bootloader>> makeBootloader(const BootloaderConfig& cfg)
{
    if (cfg.path.empty()) {
        return unexpected(ErrorCode::InvalidArgument, "bootloader.path is not set");
    }
    if (cfg.type == "file") {
        return std::unique_ptr<Bootloader>(new FileBootloader(cfg.path));
    }
    if (cfg.type == "uboot") {
        return std::unique_ptr<Bootloader>(new UbootBootloader(cfg));
    }
    if (cfg.type == "grub") {
        return std::unique_ptr<Bootloader>(new GrubBootloader(cfg));
    }
    return unexpected(ErrorCode::InvalidArgument,
                      "bootloader.type '" + cfg.type + "' is not one of file, uboot, grub");
}

} // namespace mbl::update
