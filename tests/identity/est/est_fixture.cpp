// SPDX-License-Identifier: Apache-2.0
#include "est_fixture.h"

#include "commands.h"

#include "mbl/fd.h"
#include "mbl/fs.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace mbl::test {

namespace {

void writeOrThrow(const std::string& path, const std::string& data, mode_t mode = 0644)
{
    if (auto st = fs::writeFileAtomic(path, data, mode); !st) {
        throw std::runtime_error(st.error().message);
    }
}

bool portOpen(int port)
{
    Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

int freePort()
{
    Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        throw std::runtime_error("bind failed");
    }
    socklen_t len = sizeof a;
    ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
}

// Until the port opens or the process exits; the bound only guards a hang.
void waitListening(Child& child, int port, const std::string& what, const std::string& logPath)
{
    for (int i = 0; i < 12000 && !portOpen(port); ++i) {
        if (child.tryWait()) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!portOpen(port)) {
        auto log = fs::readFile(logPath);
        throw std::runtime_error(what + " did not listen: " + (log ? *log : std::string()));
    }
}

size_t collect(char* p, size_t sz, size_t n, void* ud)
{
    static_cast<std::string*>(ud)->append(p, sz * n);
    return sz * n;
}

std::string backendCall(int port, const std::string& method, const std::string& path, const std::string& body)
{
    CURL* c = curl_easy_init();
    std::string out;
    curl_easy_setopt(c, CURLOPT_URL, ("http://127.0.0.1:" + std::to_string(port) + path).c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_slist* h = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (method == "POST") {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    const CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK || status != 200) {
        throw std::runtime_error("EST test server " + method + " " + path + " failed: " + curl_easy_strerror(rc) +
                                 " " + std::to_string(status) + " " + out);
    }
    return out;
}

} // namespace

EstFixture::EstFixture()
{
    if (::access("/usr/sbin/nginx", X_OK) != 0) {
        skip("nginx is not installed (tests/setup.sh installs nginx-light)");
    }
    if (python3Path().empty()) {
        skip("python3 is not installed");
    }
    makePki();
    startServer();
    startNginx();
}

EstFixture::~EstFixture()
{
    if (nginx_.running()) {
        nginx_.terminate(std::chrono::milliseconds(2000));
    }
    if (server_.running()) {
        server_.terminate(std::chrono::milliseconds(2000));
    }
}

void EstFixture::makePki()
{
    const std::string d = dir() + "/pki";
    (void)fs::makeDirs(d, 0755);
    (void)fs::makeDirs(d + "/issued", 0755);
    auto ca = [&](const std::string& name, const std::string& cn) {
        mustRun({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              d + "/" + name + ".key", "-out", d + "/" + name + ".pem", "-days", "2", "-subj", "/CN=" + cn,
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
    };
    ca("tls-ca", "EST TLS CA");
    ca("fleet-ca", "Test Fleet CA");
    ca("bootstrap-ca", "Factory Bootstrap CA");
    ca("other-ca", "Test Fleet CA"); // same name, another key: only the signature tells them apart
    // The fleet's next CA (a rotation, RFC 7030 §4.1.3) and its "NewWithOld"
    // certificate: the new CA's name and public key, signed by the current CA.
    ca("fleet-ca-2", "Test Fleet CA 2");
    mustRun({"openssl", "req", "-new", "-key", d + "/fleet-ca-2.key", "-subj", "/CN=Test Fleet CA 2", "-out",
          d + "/fleet-ca-2.csr"});
    writeOrThrow(d + "/new-with-old.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                                          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
    mustRun({"openssl", "x509", "-req", "-in", d + "/fleet-ca-2.csr", "-CA", d + "/fleet-ca.pem", "-CAkey",
          d + "/fleet-ca.key", "-CAcreateserial", "-out", d + "/new-with-old.pem", "-days", "2", "-extfile",
          d + "/new-with-old.ext"});
    auto leaf = [&](const std::string& caName, const std::string& name, const std::string& cn, const std::string& ext) {
        mustRun({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              d + "/" + name + ".key", "-out", d + "/" + name + ".csr", "-subj", "/CN=" + cn});
        writeOrThrow(d + "/" + name + ".ext", ext);
        mustRun({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA", d + "/" + caName + ".pem", "-CAkey",
              d + "/" + caName + ".key", "-CAcreateserial", "-out", d + "/" + name + ".pem", "-days", "2",
              "-extfile", d + "/" + name + ".ext"});
    };
    leaf("tls-ca", "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    leaf("bootstrap-ca", "bootstrap", "factory-line-7", "extendedKeyUsage=clientAuth\n");
    // The bootstrap key is a factory credential the identity service (its own user) reads.
    (void)::chmod((d + "/bootstrap.key").c_str(), 0644);
    writeOrThrow(d + "/client-cas.pem", readOrThrow(d + "/bootstrap-ca.pem") + readOrThrow(d + "/fleet-ca.pem") +
                                             readOrThrow(d + "/fleet-ca-2.pem"));
    writeOrThrow(d + "/index.txt", "");
    writeOrThrow(d + "/serial", "1000\n");
    // `openssl ca`: the subject as the CSR has it (or -subj), a client certificate, no copied extensions.
    writeOrThrow(d + "/ca.cnf", "[ca]\ndefault_ca = est\n"
                                "[est]\ndatabase = " + d + "/index.txt\nnew_certs_dir = " + d + "/issued\n"
                                "serial = " + d + "/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n"
                                "x509_extensions = client\n"
                                "[any]\ncommonName = supplied\n"
                                "[client]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
                                "extendedKeyUsage = clientAuth\n");
}

void EstFixture::startServer()
{
    backendPort_ = freePort();
    SpawnOptions so;
    so.dieWithParent = true;
    Fd logFd{::open((dir() + "/est-server.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    auto c = Child::spawn({python3Path(), sourceRoot() + "/tests/identity/est/est_server.py", "--port",
                           std::to_string(backendPort_), "--pki", dir() + "/pki"},
                          so);
    if (!c) {
        throw std::runtime_error("cannot start est_server.py: " + c.error().message);
    }
    server_ = std::move(c).value();
    waitListening(server_, backendPort_, "est_server.py", dir() + "/est-server.log");
}

void EstFixture::startNginx()
{
    tlsPort_ = freePort();
    const std::string d = dir() + "/nginx";
    const std::string pki = dir() + "/pki";
    for (const std::string& sub : {d, d + "/logs", d + "/tmp"}) {
        (void)fs::makeDirs(sub, 0755);
    }
    // TLS terminates here, as in front of a real EST server; the verified client
    // certificate's subject and issuer go to the server (RFC 7030 §3.3.2).
    const std::string conf =
        "pid " + d + "/nginx.pid;\n"
        "error_log " + d + "/logs/error.log warn;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "  access_log " + d + "/logs/access.log;\n"
        "  client_body_temp_path " + d + "/tmp/body;\n"
        "  proxy_temp_path " + d + "/tmp/proxy;\n"
        "  fastcgi_temp_path " + d + "/tmp/fcgi;\n"
        "  uwsgi_temp_path " + d + "/tmp/uwsgi;\n"
        "  scgi_temp_path " + d + "/tmp/scgi;\n"
        "  server {\n"
        "    listen 127.0.0.1:" + std::to_string(tlsPort_) + " ssl;\n"
        "    ssl_certificate " + pki + "/server.pem;\n"
        "    ssl_certificate_key " + pki + "/server.key;\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        "    ssl_client_certificate " + pki + "/client-cas.pem;\n"
        "    ssl_verify_client optional;\n"
        "    location /.well-known/est/ {\n"
        "      proxy_pass http://127.0.0.1:" + std::to_string(backendPort_) + ";\n"
        "      proxy_set_header X-Ssl-Client-Verify $ssl_client_verify;\n"
        "      proxy_set_header X-Ssl-Client-S-Dn $ssl_client_s_dn;\n"
        "      proxy_set_header X-Ssl-Client-I-Dn $ssl_client_i_dn;\n"
        "    }\n"
        "    location / { return 404; }\n"
        "  }\n"
        "}\n";
    writeOrThrow(d + "/nginx.conf", conf);
    SpawnOptions so;
    so.dieWithParent = true;
    Fd logFd{::open((d + "/logs/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    auto c = Child::spawn({"/usr/sbin/nginx", "-p", d, "-c", d + "/nginx.conf", "-g", "daemon off;"}, so);
    if (!c) {
        throw std::runtime_error("cannot start nginx: " + c.error().message);
    }
    nginx_ = std::move(c).value();
    waitListening(nginx_, tlsPort_, "nginx", d + "/logs/stderr.log");
}

void EstFixture::configure(const nlohmann::json& config)
{
    (void)backendCall(backendPort_, "POST", "/admin/config", config.dump());
}

nlohmann::json EstFixture::state()
{
    return nlohmann::json::parse(backendCall(backendPort_, "GET", "/admin/state", ""));
}

std::vector<std::pair<std::string, int>> EstFixture::requests(const std::string& pathContains)
{
    std::vector<std::pair<std::string, int>> out;
    const nlohmann::json all = state();
    for (const auto& r : all["requests"]) {
        const std::string path = r["path"].get<std::string>();
        if (path.find(pathContains) != std::string::npos) {
            out.emplace_back(path, r["status"].get<int>());
        }
    }
    return out;
}

std::string EstFixture::serverLog() const
{
    auto a = fs::readFile(dir() + "/est-server.log");
    auto b = fs::readFile(dir() + "/nginx/logs/error.log");
    return (a ? *a : std::string()) + (b ? *b : std::string());
}

} // namespace mbl::test
