// SPDX-License-Identifier: Apache-2.0
#include "cloud_fixture.h"

#include "commands.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace mbl::test {

namespace {

bool portOpen(int port)
{
    Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

size_t collect(char* p, size_t sz, size_t n, void* ud)
{
    static_cast<std::string*>(ud)->append(p, sz * n);
    return sz * n;
}

} // namespace

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

CloudFixture::CloudFixture()
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

CloudFixture::~CloudFixture()
{
    if (cdn_.running()) {
        cdn_.terminate(std::chrono::milliseconds(2000));
    }
    if (nginx_.running()) {
        nginx_.terminate(std::chrono::milliseconds(2000));
    }
    if (server_.running()) {
        server_.terminate(std::chrono::milliseconds(2000));
    }
}

void CloudFixture::makePki()
{
    const std::string d = dir() + "/pki";
    (void)fs::makeDirs(d, 0755);
    auto ca = [&](const std::string& name) {
        mustRun({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              d + "/" + name + ".key", "-out", d + "/" + name + ".pem", "-days", "2", "-subj", "/CN=" + name,
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
    };
    ca("test-ca");
    ca("other-ca");
    ca("cdn-ca");
    auto leaf = [&](const std::string& caName, const std::string& name, const std::string& cn, const std::string& ext) {
        mustRun({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              d + "/" + name + ".key", "-out", d + "/" + name + ".csr", "-subj", "/CN=" + cn});
        (void)fs::writeFileAtomic(d + "/" + name + ".ext", ext, 0644);
        mustRun({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA", d + "/" + caName + ".pem", "-CAkey",
              d + "/" + caName + ".key", "-CAcreateserial", "-out", d + "/" + name + ".pem", "-days", "2",
              "-extfile", d + "/" + name + ".ext"});
    };
    // 10.0.2.100: where the QEMU device of tests/device reaches this nginx
    // (QEMU user-mode networking forwards that guest address to the loopback).
    leaf("test-ca", "server", "localhost",
         "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.2.100\nextendedKeyUsage=serverAuth\n");
    leaf("test-ca", "wronghost", "device.example.org",
         "subjectAltName=DNS:device.example.org\nextendedKeyUsage=serverAuth\n");
    leaf("other-ca", "otherca", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    leaf("cdn-ca", "cdn", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    auto h = mbl::run({"openssl", "x509", "-in", d + "/test-ca.pem", "-noout", "-hash"});
    if (!h || !h->status.success()) {
        throw std::runtime_error("openssl x509 -hash failed");
    }
    issuerHash_ = str::trim(h->out);
}

std::string CloudFixture::caPem() const
{
    return readOrThrow(dir() + "/pki/test-ca.pem");
}

CloudFixture::DeviceCreds CloudFixture::makeDevice(const std::string& deviceId)
{
    const std::string d = dir() + "/pki";
    const std::string name = "device-" + deviceId;
    mustRun({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
          d + "/" + name + ".key", "-out", d + "/" + name + ".csr", "-subj", "/O=MBL test/CN=" + deviceId});
    (void)fs::writeFileAtomic(d + "/" + name + ".ext", "extendedKeyUsage=clientAuth\n", 0644);
    mustRun({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA", d + "/test-ca.pem", "-CAkey",
          d + "/test-ca.key", "-CAcreateserial", "-out", d + "/" + name + ".pem", "-days", "2", "-extfile",
          d + "/" + name + ".ext"});
    DeviceCreds c;
    c.keyPath = d + "/" + name + ".key";
    c.keyPem = readOrThrow(c.keyPath);
    c.chainPem = readOrThrow(d + "/" + name + ".pem");
    return c;
}

std::string CloudFixture::signDeviceCsr(const std::string& csrPem, const std::string& deviceId)
{
    const std::string d = dir() + "/pki";
    const std::string name = "csr-" + deviceId;
    if (auto st = fs::writeFileAtomic(d + "/" + name + ".csr", csrPem, 0644); !st) {
        throw std::runtime_error(st.error().message);
    }
    (void)fs::writeFileAtomic(d + "/" + name + ".ext", "extendedKeyUsage=clientAuth\n", 0644);
    mustRun({"openssl", "x509", "-req", "-in", d + "/" + name + ".csr", "-CA", d + "/test-ca.pem", "-CAkey",
          d + "/test-ca.key", "-CAcreateserial", "-subj", "/O=MBL test/CN=" + deviceId, "-out", d + "/" + name + ".pem",
          "-days", "2", "-extfile", d + "/" + name + ".ext"});
    return readOrThrow(d + "/" + name + ".pem");
}

void CloudFixture::startServer()
{
    backendPort_ = freePort();
    (void)fs::makeDirs(dir() + "/artifacts", 0755);
    SpawnOptions so;
    so.dieWithParent = true;
    Fd logFd{::open((dir() + "/ddi-server.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    auto c = Child::spawn({python3Path(), sourceRoot() + "/tests/cloud/ddi_server.py", "--port", std::to_string(backendPort_),
                           "--artifact-dir", dir() + "/artifacts", "--sleep", "00:00:02", "--trusted-issuer-hash",
                           issuerHash_},
                          so);
    if (!c) {
        throw std::runtime_error("cannot start ddi_server.py: " + c.error().message);
    }
    server_ = std::move(c).value();
    for (int i = 0; i < 500 && !portOpen(backendPort_); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!portOpen(backendPort_)) {
        throw std::runtime_error("ddi_server.py did not listen: " + readOrThrow(dir() + "/ddi-server.log"));
    }
}

void CloudFixture::startNginx()
{
    tlsPort_ = freePort();
    wrongHostPort_ = freePort();
    wrongCaPort_ = freePort();
    http2Port_ = freePort();
    const std::string d = dir();
    const std::string pki = d + "/pki";
    for (const char* sub : {"/nginx", "/nginx/logs", "/nginx/tmp"}) {
        (void)fs::makeDirs(d + sub, 0755);
    }
    auto server = [&](int port, const std::string& cert, bool http2 = false) {
        return "  server {\n"
               "    listen 127.0.0.1:" + std::to_string(port) + (http2 ? " ssl http2;\n" : " ssl;\n") +
               "    server_name localhost;\n"
               "    ssl_certificate " + pki + "/" + cert + ".pem;\n"
               "    ssl_certificate_key " + pki + "/" + cert + ".key;\n"
               "    ssl_protocols TLSv1.2 TLSv1.3;\n"
               "    ssl_client_certificate " + pki + "/test-ca.pem;\n"
               "    ssl_verify_client optional;\n"
               "    ssl_session_cache shared:ddi" + std::to_string(port) + ":1m;\n"
               "    keepalive_timeout 600s;\n"
               "    keepalive_requests 100000;\n"
               "    location /admin/ { return 404; }\n"
               // The test server's X-Accel-Redirect target (accel_redirect): only
               // reachable through an answer of the server, never by a client.
               "    location /_mbl_artifact/ { internal; alias /; }\n"
               "    location / {\n"
               "      proxy_pass http://127.0.0.1:" + std::to_string(backendPort_) + ";\n"
               "      proxy_http_version 1.1;\n"
               "      proxy_buffering off;\n"
               "      proxy_request_buffering off;\n"
               "      proxy_read_timeout 600s;\n"
               "      proxy_set_header Host $http_host;\n"
               "      proxy_set_header X-Forwarded-Proto https;\n"
               "      proxy_set_header X-Ssl-Client-Cn $mbl_client_cn;\n"
               "      proxy_set_header X-Ssl-Issuer-Hash-1 $mbl_issuer_hash;\n"
               "    }\n"
               "  }\n";
    };
    const std::string conf =
        "worker_processes 1;\n"
        "user root root;\n"
        "pid " + d + "/nginx/nginx.pid;\n"
        "error_log " + d + "/nginx/logs/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "  log_format ddi '$connection $connection_requests $ssl_session_reused \"$request\" $status "
        "$request_length $bytes_sent';\n"
        "  access_log " + d + "/nginx/logs/access.log ddi;\n"
        "  client_body_temp_path " + d + "/nginx/tmp/body;\n"
        "  proxy_temp_path " + d + "/nginx/tmp/proxy;\n"
        "  fastcgi_temp_path " + d + "/nginx/tmp/fcgi;\n"
        "  uwsgi_temp_path " + d + "/nginx/tmp/uwsgi;\n"
        "  scgi_temp_path " + d + "/nginx/tmp/scgi;\n"
        "  client_max_body_size 1m;\n"
        // nginx 1.22 has no $ssl_client_s_dn_cn: take the CN out of the RFC 2253 DN.
        "  map $ssl_client_s_dn $mbl_client_cn_raw {\n"
        "    default \"\";\n"
        "    \"~(^|,)CN=(?<cn>[^,]+)\" $cn;\n"
        "  }\n"
        // Only a verified certificate counts (verify is optional so tokens work too).
        "  map $ssl_client_verify $mbl_client_cn {\n"
        "    SUCCESS $mbl_client_cn_raw;\n"
        "    default \"\";\n"
        "  }\n"
        "  map $ssl_client_verify $mbl_issuer_hash {\n"
        "    SUCCESS \"" + issuerHash_ + "\";\n"
        "    default \"\";\n"
        "  }\n" +
        server(tlsPort_, "server") + server(wrongHostPort_, "wronghost") + server(wrongCaPort_, "otherca") +
        server(http2Port_, "server", true) + "}\n";
    (void)fs::writeFileAtomic(d + "/nginx/nginx.conf", conf, 0644);
    SpawnOptions so;
    so.dieWithParent = true;
    Fd logFd{::open((d + "/nginx/logs/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    auto c = Child::spawn({"/usr/sbin/nginx", "-p", d + "/nginx", "-c", d + "/nginx/nginx.conf", "-g", "daemon off;"}, so);
    if (!c) {
        throw std::runtime_error("cannot start nginx: " + c.error().message);
    }
    nginx_ = std::move(c).value();
    for (int i = 0; i < 500 && !portOpen(tlsPort_); ++i) {
        if (nginx_.tryWait()) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!portOpen(tlsPort_)) {
        throw std::runtime_error("nginx did not start: " + nginxLog());
    }
}

std::string CloudFixture::nginxLog() const
{
    auto a = fs::readFile(dir() + "/nginx/logs/stderr.log");
    auto b = fs::readFile(dir() + "/nginx/logs/error.log");
    return (a ? *a : "") + (b ? *b : "");
}

std::string CloudFixture::startCdn()
{
    if (cdnPort_ != 0) {
        return cdnBase() + "/cdn";
    }
    cdnPort_ = freePort();
    cdnHttpPort_ = freePort();
    const std::string d = dir() + "/cdn";
    const std::string pki = dir() + "/pki";
    for (const char* sub : {"", "/logs", "/tmp"}) {
        (void)fs::makeDirs(d + sub, 0755);
    }
    const std::string conf =
        "worker_processes 1;\n"
        "user root root;\n"
        "pid " + d + "/nginx.pid;\n"
        "error_log " + d + "/logs/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "  log_format cdn '$status $uri cert=$ssl_client_s_dn auth=$http_authorization';\n"
        "  access_log " + d + "/logs/access.log cdn;\n"
        "  client_body_temp_path " + d + "/tmp/body;\n"
        "  proxy_temp_path " + d + "/tmp/proxy;\n"
        "  fastcgi_temp_path " + d + "/tmp/fcgi;\n"
        "  uwsgi_temp_path " + d + "/tmp/uwsgi;\n"
        "  scgi_temp_path " + d + "/tmp/scgi;\n"
        "  server {\n"
        "    listen 127.0.0.1:" + std::to_string(cdnPort_) + " ssl;\n"
        "    listen 127.0.0.1:" + std::to_string(cdnHttpPort_) + ";\n"
        "    ssl_certificate " + pki + "/cdn.pem;\n"
        "    ssl_certificate_key " + pki + "/cdn.key;\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        // Asks for a client certificate without checking it: the log shows whether one came.
        "    ssl_verify_client optional_no_ca;\n"
        "    location /cdn/loop/ { return 302 $scheme://$http_host$uri; }\n"
        "    location /cdn/ { alias " + dir() + "/artifacts/; }\n"
        "  }\n"
        "}\n";
    (void)fs::writeFileAtomic(d + "/nginx.conf", conf, 0644);
    SpawnOptions so;
    so.dieWithParent = true;
    Fd logFd{::open((d + "/logs/stderr.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    auto c = Child::spawn({"/usr/sbin/nginx", "-p", d, "-c", d + "/nginx.conf", "-g", "daemon off;"}, so);
    if (!c) {
        throw std::runtime_error("cannot start the CDN nginx: " + c.error().message);
    }
    cdn_ = std::move(c).value();
    // Until the port opens or nginx exits; the bound (2 min) only guards a hang on a loaded machine.
    for (int i = 0; i < 12000 && !portOpen(cdnPort_); ++i) {
        if (cdn_.tryWait()) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!portOpen(cdnPort_)) {
        auto e = fs::readFile(d + "/logs/stderr.log");
        throw std::runtime_error("the CDN nginx did not start: " + (e ? *e : std::string()));
    }
    return cdnBase() + "/cdn";
}

std::string CloudFixture::cdnLog() const
{
    auto t = fs::readFile(dir() + "/cdn/logs/access.log");
    return t ? *t : std::string();
}

nlohmann::json CloudFixture::admin(const std::string& method, const std::string& path, const nlohmann::json& body)
{
    CURL* c = curl_easy_init();
    std::string out;
    std::string payload = body.is_null() ? std::string() : body.dump();
    const std::string url = "http://127.0.0.1:" + std::to_string(backendPort_) + path;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method != "GET") {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload.c_str());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        throw std::runtime_error(std::string("admin request failed: ") + curl_easy_strerror(rc));
    }
    auto j = nlohmann::json::parse(out, nullptr, false);
    if (j.is_discarded()) {
        j = nlohmann::json::object();
    }
    j["_status"] = status;
    return j;
}

} // namespace mbl::test
