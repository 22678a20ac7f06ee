// SPDX-License-Identifier: Apache-2.0
// The cloud client's remote client key (services/cloud-client/remote_key.h) in
// real OpenSSL TLS handshakes, in memory (a BIO pair), against a server that
// requires a client certificate. The signer is the identity service's own
// signDigest() with the device key, as DeviceIdentity1.Sign answers: the client
// side never holds the key.

#include "device_key.h"
#include "mbl/remote_key.h"
#include "signer.h"
#include "test_certs.h"

#include "harness.h"

#include "mbl/crypto.h"
#include "mbl/process.h"

#include <catch2/catch.hpp>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <memory>
#include <vector>

using namespace mbl;

namespace {

struct SslCtxFree {
    void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslFree {
    void operator()(SSL* p) const { SSL_free(p); }
};
using SslCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;
using Ssl = std::unique_ptr<SSL, SslFree>;

struct Calls {
    std::vector<std::string> algorithms;
};

// A signer that signs as DeviceIdentity1.Sign does, with `key`, recording what it was asked.
crypto::HandshakeSigner signerFor(const identity::DeviceKey& key, Calls& calls)
{
    return [&key, &calls](const std::string& algorithm, const std::string& digest) -> Expected<std::string> {
        calls.algorithms.push_back(algorithm);
        auto alg = identity::parseSignAlgorithm(algorithm);
        if (!alg) {
            return unexpected(alg.error());
        }
        return identity::signDigest(key, *alg, digest);
    };
}

struct Handshake {
    bool ok = false;
    std::string peerCn;  // the client certificate's CN as the server saw it
    std::string clientError;
};

// One handshake, client limited to `maxVersion`; the server asks for and verifies a client certificate.
Handshake handshake(const test::TestCert& ca, const std::string& chainPem, EVP_PKEY* clientKey, int maxVersion)
{
    auto serverKey = identity::DeviceKey::generate(identity::KeyType::EcP256);
    REQUIRE(serverKey);
    auto server = test::makeLeaf(ca, serverKey->get(), "server");

    SslCtx sctx(SSL_CTX_new(TLS_server_method()));
    REQUIRE(SSL_CTX_use_certificate(sctx.get(), server.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(sctx.get(), serverKey->get()) == 1);
    REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(sctx.get()), ca.cert.get()) == 1);
    SSL_CTX_set_verify(sctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);

    SslCtx cctx(SSL_CTX_new(TLS_client_method()));
    REQUIRE(SSL_CTX_set_max_proto_version(cctx.get(), maxVersion) == 1);
    REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx.get()), ca.cert.get()) == 1);
    SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_PEER, nullptr);
    auto st = crypto::useClientIdentity(cctx.get(), chainPem, clientKey);
    INFO((st ? "" : st.error().message));
    REQUIRE(st);

    Ssl s(SSL_new(sctx.get()));
    Ssl c(SSL_new(cctx.get()));
    BIO* sb = nullptr;
    BIO* cb = nullptr;
    REQUIRE(BIO_new_bio_pair(&sb, 0, &cb, 0) == 1);
    SSL_set_bio(s.get(), sb, sb);
    SSL_set_bio(c.get(), cb, cb);
    SSL_set_accept_state(s.get());
    SSL_set_connect_state(c.get());
    Handshake out;
    bool clientDone = false;
    bool serverDone = false;
    for (int i = 0; i < 20 && !(clientDone && serverDone); ++i) {
        if (!clientDone) {
            const int rc = SSL_do_handshake(c.get());
            if (rc == 1) {
                clientDone = true;
            } else if (SSL_get_error(c.get(), rc) != SSL_ERROR_WANT_READ) {
                // The whole queue with each entry's data (where the provider puts its reason).
                const char* data = nullptr;
                int flags = 0;
                while (unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
                    char text[256];
                    ERR_error_string_n(e, text, sizeof text);
                    out.clientError += std::string(text) + ((flags & ERR_TXT_STRING) != 0 ? std::string(": ") + data : "") + "\n";
                }
                return out;
            }
        }
        if (!serverDone) {
            const int rc = SSL_do_handshake(s.get());
            if (rc == 1) {
                serverDone = true;
            } else if (SSL_get_error(s.get(), rc) != SSL_ERROR_WANT_READ) {
                return out;
            }
        }
    }
    out.ok = clientDone && serverDone;
    if (X509* peer = SSL_get0_peer_certificate(s.get())) {
        char cn[256] = {0};
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
        out.peerCn = cn;
    }
    return out;
}

identity::DeviceKey rsaKey(const test::TempDir& dir)
{
    auto r = mbl::run({"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                       dir.path() + "/rsa.key"});
    REQUIRE(r);
    REQUIRE(r->status.success());
    auto key = identity::DeviceKey::load(dir.path() + "/rsa.key");
    REQUIRE(key);
    return std::move(key).value();
}

} // namespace

TEST_CASE("remote key: TLS 1.3 and 1.2 with a client certificate complete with an EC key that signs only through the signer")
{
    auto ca = test::makeCa("Fleet CA");
    auto device = identity::DeviceKey::generate(identity::KeyType::EcP256);
    REQUIRE(device);
    const std::string chain = test::certPem(test::makeLeaf(ca, device->get(), "dev-01").get());
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        INFO("TLS version " << std::hex << version);
        Calls calls;
        auto key = crypto::makeRemoteKey(chain, signerFor(*device, calls));
        REQUIRE(key);
        auto h = handshake(ca, chain, key->get(), version);
        INFO(h.clientError);
        CHECK(h.ok);
        CHECK(h.peerCn == "dev-01");
        CHECK(calls.algorithms == std::vector<std::string>{"ecdsa-sha256"});
    }
}

TEST_CASE("remote key: an RSA key signs with PSS (TLS 1.3 and 1.2) through the signer")
{
    test::TempDir tmp("mbl-remote-key");
    auto ca = test::makeCa("Fleet CA");
    auto device = rsaKey(tmp);
    const std::string chain = test::certPem(test::makeLeaf(ca, device.get(), "dev-rsa").get());
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        INFO("TLS version " << std::hex << version);
        Calls calls;
        auto key = crypto::makeRemoteKey(chain, signerFor(device, calls));
        REQUIRE(key);
        auto h = handshake(ca, chain, key->get(), version);
        INFO(h.clientError);
        CHECK(h.ok);
        CHECK(h.peerCn == "dev-rsa");
        CHECK(calls.algorithms == std::vector<std::string>{"rsa-pss-sha256"});
    }
}

TEST_CASE("remote key: a signer that fails fails the handshake with its reason")
{
    auto ca = test::makeCa("Fleet CA");
    auto device = identity::DeviceKey::generate(identity::KeyType::EcP256);
    REQUIRE(device);
    const std::string chain = test::certPem(test::makeLeaf(ca, device->get(), "dev-01").get());
    int asked = 0;
    auto key = crypto::makeRemoteKey(chain, [&](const std::string&, const std::string&) -> Expected<std::string> {
        ++asked;
        return unexpected(ErrorCode::Io, "org.freedesktop.DBus.Error.ServiceUnknown: the identity service is gone");
    });
    REQUIRE(key);
    auto h = handshake(ca, chain, key->get(), TLS1_3_VERSION);
    CHECK_FALSE(h.ok);
    CHECK(asked == 1);
    CHECK(h.clientError.find("the identity service is gone") != std::string::npos);
}

TEST_CASE("remote key: it holds no private key, so none can be read or written out of it")
{
    auto ca = test::makeCa("Fleet CA");
    auto device = identity::DeviceKey::generate(identity::KeyType::EcP256);
    REQUIRE(device);
    const std::string chain = test::certPem(test::makeLeaf(ca, device->get(), "dev-01").get());
    auto key = crypto::makeRemoteKey(chain, [](const std::string&, const std::string&) -> Expected<std::string> {
        return unexpected(ErrorCode::Failed, "not used");
    });
    REQUIRE(key);
    BIGNUM* priv = nullptr;
    CHECK(EVP_PKEY_get_bn_param(key->get(), OSSL_PKEY_PARAM_PRIV_KEY, &priv) != 1);
    BN_free(priv);
    crypto::Bio out(BIO_new(BIO_s_mem()));
    CHECK(PEM_write_bio_PrivateKey(out.get(), key->get(), nullptr, nullptr, 0, nullptr, nullptr) != 1);
    ERR_clear_error();
    // The public half is the certificate's.
    crypto::Bio pub(BIO_new(BIO_s_mem()));
    CHECK(PEM_write_bio_PUBKEY(pub.get(), key->get()) == 1);
    CHECK(EVP_PKEY_eq(key->get(), device->get()) == 1);
}

TEST_CASE("remote key: a chain for another key is refused by useClientIdentity; no PEM at all by makeRemoteKey")
{
    auto ca = test::makeCa("Fleet CA");
    auto device = identity::DeviceKey::generate(identity::KeyType::EcP256);
    auto other = identity::DeviceKey::generate(identity::KeyType::EcP256);
    REQUIRE(device);
    REQUIRE(other);
    const std::string chain = test::certPem(test::makeLeaf(ca, device->get(), "dev-01").get());
    const std::string otherChain = test::certPem(test::makeLeaf(ca, other->get(), "dev-02").get());
    auto key = crypto::makeRemoteKey(chain, [](const std::string&, const std::string&) -> Expected<std::string> {
        return unexpected(ErrorCode::Failed, "not used");
    });
    REQUIRE(key);
    SslCtx ctx(SSL_CTX_new(TLS_client_method()));
    auto st = crypto::useClientIdentity(ctx.get(), otherChain, key->get());
    REQUIRE_FALSE(st);
    CHECK(st.error().message.find("does not match") != std::string::npos);
    auto none = crypto::makeRemoteKey("not a certificate", {});
    REQUIRE_FALSE(none);
    CHECK(none.error().code == ErrorCode::InvalidArgument);
}
