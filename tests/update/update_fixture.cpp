// SPDX-License-Identifier: Apache-2.0
#include "update_fixture.h"

#include "harness.h"

#include "mbl/archive_ptr.h"
#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <fcntl.h>
#include <iostream>
#include <optional>
#include <random>
#include <stdexcept>
#include <unistd.h>

namespace mbl::test::update {

std::string bundleTool()
{
    return buildRoot() + "/services/mbl-bundle/mbl-bundle";
}

RunResult mustRun(const std::vector<std::string>& argv, const std::vector<std::string>& env)
{
    SpawnOptions o;
    o.env = env;
    auto r = run(argv, o);
    if (!r) {
        throw std::runtime_error("cannot run " + argv[0] + ": " + r.error().message);
    }
    return *r;
}

std::string sha256File(const std::string& path)
{
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    auto h = crypto::sha256HexOfFd(fd.get());
    return h ? h->first : std::string();
}

void writeFile(const std::string& path, const std::string& data)
{
    if (!fs::writeFileAtomic(path, data, 0644)) {
        throw std::runtime_error("cannot write " + path);
    }
}

std::string readFile(const std::string& path)
{
    auto t = fs::readFile(path, 1u << 30);
    return t ? *t : std::string();
}

void makeImage(const std::string& path, std::size_t size, unsigned seed)
{
    std::mt19937 gen(seed);
    std::string data(size, '\0');
    for (auto& c : data) {
        c = static_cast<char>(gen());
    }
    writeFile(path, data);
}

namespace {
void ossl(const std::vector<std::string>& args)
{
    std::vector<std::string> argv{"openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = mustRun(argv);
    if (!r.status.success()) {
        throw std::runtime_error("openssl " + args[0] + " failed: " + r.err);
    }
}

void makeCa(const std::string& dir, const std::string& name, const std::string& cn)
{
    ossl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
          dir + "/" + name + ".key", "-out", dir + "/" + name + ".pem", "-days", "3650", "-subj", "/CN=" + cn,
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
}

void makeLeaf(const std::string& dir, const std::string& name, const std::string& cn, const std::string& issuer,
              const std::string& ext)
{
    ossl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
          dir + "/" + name + ".key", "-out", dir + "/" + name + ".csr", "-subj", "/CN=" + cn});
    writeFile(dir + "/" + name + ".ext", ext);
    ossl({"x509", "-req", "-in", dir + "/" + name + ".csr", "-CA", dir + "/" + issuer + ".pem", "-CAkey",
          dir + "/" + issuer + ".key", "-CAcreateserial", "-out", dir + "/" + name + ".pem", "-days", "3650",
          "-extfile", dir + "/" + name + ".ext"});
}
} // namespace

Pki::Pki(const std::string& d) : dir(d)
{
    (void)fs::makeDirs(dir, 0700);
    makeCa(dir, "ca", "MBL Test Root CA");
    makeLeaf(dir, "int", "MBL Test Firmware CA", "ca",
             "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n");
    makeLeaf(dir, "sign", "MBL Test Firmware Signer", "int",
             "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n");
    makeLeaf(dir, "noeku", "MBL Test TLS Server", "int",
             "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
    makeCa(dir, "other", "Somebody Else's CA");
    makeLeaf(dir, "osign", "Somebody Else's Signer", "other",
             "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n");
    caPem = dir + "/ca.pem";
    intPem = dir + "/int.pem";
    signKey = dir + "/sign.key";
    signPem = dir + "/sign.pem";
    noEkuKey = dir + "/noeku.key";
    noEkuPem = dir + "/noeku.pem";
    otherCaPem = dir + "/other.pem";
    otherKey = dir + "/osign.key";
    otherPem = dir + "/osign.pem";
}

RunResult createBundle(const BundleSpec& s, const std::string& out)
{
    std::vector<std::string> argv{bundleTool(), "create", "--key", s.key, "--cert", s.cert, "--version", s.version,
                                  "--security-version", std::to_string(s.securityVersion), "--compatible",
                                  s.compatible, "-o", out};
    if (!s.chain.empty()) {
        argv.insert(argv.end(), {"--chain", s.chain});
    }
    if (!s.rootfs.empty()) {
        argv.insert(argv.end(), {"--rootfs", s.rootfs, "--slot-class", s.slotClass});
    }
    for (const auto& [name, file] : s.apps) {
        argv.insert(argv.end(), {"--app", name + "=" + file});
    }
    if (!s.config.empty()) {
        argv.insert(argv.end(), {"--config", s.config});
    }
    return mustRun(argv);
}

void writeTar(const std::string& out, const std::vector<std::pair<std::string, std::string>>& members)
{
    ArchiveWriter w(archive_write_new());
    archive_write_set_format_pax_restricted(w.get());
    if (archive_write_open_filename(w.get(), out.c_str()) != ARCHIVE_OK) {
        throw std::runtime_error("cannot create " + out);
    }
    for (const auto& [name, data] : members) {
        ArchiveEntry e(archive_entry_new());
        archive_entry_set_pathname(e.get(), name.c_str());
        archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_perm(e.get(), 0644);
        archive_write_header(w.get(), e.get());
        archive_write_data(w.get(), data.data(), data.size());
    }
    archive_write_close(w.get());
}

std::vector<std::pair<std::string, std::string>> readTar(const std::string& path)
{
    std::vector<std::pair<std::string, std::string>> out;
    ArchiveReader r(archive_read_new());
    archive_read_support_format_tar(r.get());
    if (archive_read_open_filename(r.get(), path.c_str(), 65536) != ARCHIVE_OK) {
        throw std::runtime_error("cannot read " + path);
    }
    struct archive_entry* e = nullptr;
    while (archive_read_next_header(r.get(), &e) == ARCHIVE_OK) {
        std::string data(static_cast<std::size_t>(archive_entry_size(e)), '\0');
        if (!data.empty()) {
            archive_read_data(r.get(), data.data(), data.size());
        }
        out.emplace_back(archive_entry_pathname(e), std::move(data));
    }
    return out;
}

Device::Device(const std::string& r, const Pki& pki, const std::string& bl, std::size_t slotSize)
    : root(r), bootloader(bl)
{
    configDir = root + "/etc/mbl";
    stateDir = root + "/var/lib/mbl/update";
    (void)fs::makeDirs(configDir + "/trust", 0755);
    (void)fs::makeDirs(root + "/dev", 0755);
    (void)fs::makeDirs(root + "/proc", 0755);
    writeFile(configDir + "/trust/mbl-test-ca.pem", readFile(pki.caPem));
    slotA = root + "/dev/slot-a.img";
    slotB = root + "/dev/slot-b.img";
    makeImage(slotA, slotSize, 1);
    writeFile(slotB, std::string(slotSize, '\0'));
    cmdline = root + "/proc/cmdline";
    bootId = root + "/proc/boot_id";
    writeFile(cmdline, "console=ttyS0 mbl.slot=a rootwait\n");
    writeFile(bootId, "boot-0\n");
    config = {{"compatible", "mbl-test-board"},
              {"factoryVersion", "1.0.0"},
              {"cmdlinePath", cmdline},
              {"bootIdPath", bootId},
              {"slots", {{{"name", "a"}, {"device", slotA}}, {{"name", "b"}, {"device", slotB}}}}};
    if (bl == "file") {
        env = root + "/boot/mbl-env";
        (void)fs::makeDirs(root + "/boot", 0755);
        config["bootloader"] = {{"type", "file"}, {"path", env}};
    } else if (bl == "uboot") {
        // The redundant environment of the device (services/systemd/
        // fw_env.config.example): two copies, blank on a fresh board.
        env = root + "/boot/uboot.env";
        (void)fs::makeDirs(root + "/boot", 0755);
        writeFile(env, std::string(0x4000, '\0'));
        writeFile(root + "/boot/uboot-redund.env", std::string(0x4000, '\0'));
        fwConfig = root + "/boot/fw_env.config";
        writeFile(fwConfig, env + " 0x0 0x4000\n" + root + "/boot/uboot-redund.env 0x0 0x4000\n");
        // A blank (zeroed) environment needs defaults once, as on a fresh board.
        writeFile(root + "/boot/defaults.txt", "bootdelay=0\n");
        config["bootloader"] = {{"type", "uboot"}, {"path", fwConfig}, {"defaults", root + "/boot/defaults.txt"}};
    } else {
        env = root + "/boot/grubenv";
        (void)fs::makeDirs(root + "/boot", 0755);
        config["bootloader"] = {{"type", "grub"}, {"path", env}};
    }
    writeConfig();
}

void Device::writeConfig() const
{
    writeFile(configDir + "/update.json", config.dump(2));
}

std::map<std::string, std::string> Device::readEnv() const
{
    std::string text;
    if (bootloader == "file") {
        text = readFile(env);
    } else if (bootloader == "uboot") {
        text = mustRun({"fw_printenv", "-c", fwConfig}).out;
    } else if (fs::exists(env)) {
        text = mustRun({"grub-editenv", env, "list"}).out;
    }
    std::map<std::string, std::string> out;
    for (const auto& line : str::split(text, '\n')) {
        auto eq = line.find('=');
        if (eq != std::string::npos) {
            out[line.substr(0, eq)] = line.substr(eq + 1);
        }
    }
    return out;
}

void Device::writeEnv(const std::map<std::string, std::string>& vars) const
{
    if (bootloader == "file") {
        auto cur = readEnv();
        for (const auto& [k, v] : vars) {
            cur[k] = v;
        }
        std::string text;
        for (const auto& [k, v] : cur) {
            text += k + "=" + v + "\n";
        }
        writeFile(env, text);
    } else if (bootloader == "uboot") {
        for (const auto& [k, v] : vars) {
            mustRun({"fw_setenv", "-c", fwConfig, "-f", root + "/boot/defaults.txt", k, v});
        }
    } else {
        std::vector<std::string> argv{"grub-editenv", env, "set"};
        for (const auto& [k, v] : vars) {
            argv.push_back(k + "=" + v);
        }
        mustRun(argv);
    }
}

namespace {

// The boot script of the GRUB backend, run by GRUB itself: grub-emu (GRUB built
// for user space) sources services/update/grub/mbl-ab.cfg over an ext2 disk image
// holding a copy of the grubenv (GRUB's save_env writes only to a disk, here the
// emulated one), and the grubenv is copied back out with debugfs. Returns the boot
// name GRUB chose ("" for none); std::nullopt when grub-emu is not installed.
std::optional<std::string> grubEmuBoot(const std::string& env)
{
    if (!fs::exists("/usr/bin/grub-emu") || !fs::exists("/sbin/mkfs.ext2") || !fs::exists("/sbin/debugfs")) {
        return std::nullopt;
    }
    test::TempDir d("mbl-grub-boot");
    const std::string dir = d.path();
    (void)fs::makeDirs(dir + "/fs", 0755);
    (void)fs::makeDirs(dir + "/grub", 0755);
    if (fs::exists(env)) {
        writeFile(dir + "/fs/grubenv", readFile(env));
    } else {
        mustRun({"grub-editenv", dir + "/fs/grubenv", "create"});
    }
    const std::string disk = dir + "/disk.img";
    mustRun({"truncate", "-s", "4M", disk});
    auto mk = mustRun({"/sbin/mkfs.ext2", "-q", "-F", "-d", dir + "/fs", disk});
    if (!mk.status.success()) {
        throw std::runtime_error("mkfs.ext2 -d failed: " + mk.err);
    }
    writeFile(dir + "/device.map", "(hd0) " + disk + "\n");
    writeFile(dir + "/grub/grub.cfg", "set mbl_env=(hd0)/grubenv\n"
                                      "source (host)" + test::sourceRoot() + "/services/update/grub/mbl-ab.cfg\n"
                                      "echo \"mbl-boot-result [$mbl_slot] [$default]\"\n"
                                      "halt\n");
    Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    SpawnOptions o;
    o.stdinFd = devnull.get();
    auto r = run({"timeout", "60", "grub-emu", "-m", dir + "/device.map", "-d", dir + "/grub"}, o);
    if (!r || !r->status.success()) {
        throw std::runtime_error("grub-emu failed: " + (r ? r->out + r->err : r.error().message));
    }
    const auto at = r->out.find("mbl-boot-result [");
    if (at == std::string::npos) {
        throw std::runtime_error("grub-emu did not run mbl-ab.cfg to its end: " + r->out);
    }
    const auto from = at + std::string("mbl-boot-result [").size();
    const std::string chosen = r->out.substr(from, r->out.find(']', from) - from);
    mustRun({"/sbin/debugfs", "-R", "dump /grubenv " + dir + "/grubenv.out", disk});
    writeFile(env, readFile(dir + "/grubenv.out"));
    return chosen;
}

} // namespace

std::string Device::reboot()
{
    std::string bootname;
    std::optional<std::string> byGrub;
    if (bootloader == "grub") {
        byGrub = grubEmuBoot(env);
        if (!byGrub) {
            std::cerr << "warning: grub-emu is not installed (tests/setup.sh installs it): the GRUB script's "
                         "contract is simulated in C++\n";
        }
    }
    if (byGrub) {
        bootname = *byGrub;
    } else {
        // What the boot script does (U-Boot: for BOOT_SLOT in "${BOOT_ORDER}"; GRUB:
        // mbl-ab.cfg's loop over $BOOT_ORDER): the first slot with attempts left boots
        // and loses one attempt.
        auto envNow = readEnv();
        for (const auto& bn : str::split(envNow["BOOT_ORDER"], ' ')) {
            if (bn.empty()) {
                continue;
            }
            const std::string var = "BOOT_" + bn + "_LEFT";
            int left = envNow.count(var) ? std::atoi(envNow[var].c_str()) : 0;
            if (left > 0) {
                writeEnv({{var, std::to_string(left - 1)}});
                bootname = bn;
                break;
            }
        }
    }
    const std::string chosen = bootname == "A" ? "a" : bootname == "B" ? "b" : bootname;
    ++boots;
    writeFile(cmdline, "console=ttyS0 mbl.slot=" + chosen + " rootwait\n");
    writeFile(bootId, "boot-" + std::to_string(boots) + "\n");
    return chosen;
}

std::string Device::booted() const
{
    auto t = readFile(cmdline);
    auto p = t.find("mbl.slot=");
    return p == std::string::npos ? "" : t.substr(p + 9, t.find(' ', p) - p - 9);
}

} // namespace mbl::test::update
