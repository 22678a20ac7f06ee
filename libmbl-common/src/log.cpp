// SPDX-License-Identifier: Apache-2.0
#include "mbl/log.h"

#include <systemd/sd-journal.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::log {

namespace {
std::mutex g_mutex;
std::string g_ident = "mbl";
Level g_level = Level::Info;
bool g_journal = false;

bool stderrIsJournal()
{
    const char* js = std::getenv("JOURNAL_STREAM");
    if (js == nullptr) {
        return false;
    }
    unsigned long long dev = 0;
    unsigned long long ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) {
        return false;
    }
    struct stat st {};
    if (fstat(STDERR_FILENO, &st) != 0) {
        return false;
    }
    return st.st_dev == dev && st.st_ino == ino;
}

const char* levelName(Level l)
{
    switch (l) {
    case Level::Debug:
        return "debug";
    case Level::Info:
        return "info";
    case Level::Notice:
        return "notice";
    case Level::Warning:
        return "warning";
    case Level::Error:
        return "error";
    }
    return "info";
}
} // namespace

void init(const std::string& ident)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    g_ident = ident;
    g_journal = stderrIsJournal();
    if (const char* lvl = std::getenv("MBL_LOG_LEVEL")) {
        Level parsed;
        if (parseLevel(lvl, parsed)) {
            g_level = parsed;
        }
    }
}

void setLevel(Level level)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    g_level = level;
}

bool parseLevel(const std::string& text, Level& out)
{
    static const std::pair<const char*, Level> kLevels[] = {
        {"debug", Level::Debug},     {"info", Level::Info},   {"notice", Level::Notice},
        {"warning", Level::Warning}, {"error", Level::Error},
    };
    for (const auto& [name, lvl] : kLevels) {
        if (text == name) {
            out = lvl;
            return true;
        }
    }
    return false;
}

void write(Level level, const std::string& message)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    if (static_cast<int>(level) > static_cast<int>(g_level)) {
        return;
    }
    if (g_journal) {
        sd_journal_send("MESSAGE=%s", message.c_str(), "PRIORITY=%d", static_cast<int>(level),
                        "SYSLOG_IDENTIFIER=%s", g_ident.c_str(), nullptr);
        return;
    }
    std::fprintf(stderr, "%s %s: %s\n", levelName(level), g_ident.c_str(), message.c_str());
    std::fflush(stderr);
}

} // namespace mbl::log
