#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An EST test server (RFC 7030, "Enrollment over Secure Transport"; stdlib and
the openssl CLI only; tests only, never shipped).

It sits behind a real nginx that terminates TLS, asks for a client certificate
(optional, verified against the bootstrap CA and the fleet CA) and passes what
it found in X-Ssl-Client-Verify / -S-Dn / -I-Dn, as an EST server's TLS layer
hands the authenticated client identity to the CA (RFC 7030 §3.3.2). What each
operation does follows the RFC's section:

  GET  /.well-known/est/cacerts          §4.1: the fleet CA(s) as a certs-only
       "application/pkcs7-mime" (§4.1.3), base64 DER with
       "Content-Transfer-Encoding: base64" (§4 intro: "base64 encoding ...
       the Content-Transfer-Encoding header"). After a CA rotation (config
       "ca": "fleet-ca-2") it holds, as §4.1.3 lists for a root key rollover,
       the current (new) root, the old root and "NewWithOld" (the new root's
       name and key signed by the old root); the fixture makes them.
  POST /.well-known/est/simpleenroll     §4.2.1: body a base64 DER PKCS#10
       ("application/pkcs10", §4.2.1); the client is authenticated by a
       certificate the server trusts (§3.3.2, here the factory bootstrap CA) or
       by HTTP authentication (§3.2.3: Basic; a Bearer token is accepted as a
       deployment's HTTP-based client authentication of the same section).
       Success: 200 with the issued certificate in a certs-only PKCS#7
       ("application/pkcs7-mime; smime-type=certs-only", §4.2.3).
       No or bad credential: 401 (§3.2.3: "the server MAY ... 401");
       authenticated but not authorised: 403 (§4.2.3 "rejected"). Manual
       approval: 202 with Retry-After (§4.2.3).
  POST /.well-known/est/simplereenroll   §4.2.2: the client authenticates with
       the certificate being renewed (a fleet CA certificate here); the CSR's
       Subject (and SAN) "MUST be identical to the corresponding fields in the
       certificate being renewed" (§4.2.2), else 400 (§4.2.3 "error").

The CA signs with `openssl ca` (so notBefore/notAfter can be set to the second
for short validity and already-expired answers).

A control API for tests (plain HTTP on loopback, never proxied by nginx):
  POST /admin/config  {"enroll": MODE, "reenroll": MODE, "validity_seconds": N,
                       "retry_after": N, "basic": "user:password", "bearer": "t"}
       "ca": "fleet-ca" | "fleet-ca-2" (the CA that issues: a rotation),
       "cacerts": "ca" (what §4.1.3 says for "ca") | "new-only" (the new root
       alone, no NewWithOld) | "unrelated" (another CA of the same name, alone)
       MODE: "ok", "refuse" (403), "retry" (202 + Retry-After), "wrong-key"
       (a certificate for another key), "wrong-cn", "wrong-ca" (signed by
       another CA), "expired", "garbage" (not PKCS#7), "not-base64".
  GET  /admin/state   {"requests": [{"path", "status", "auth"}...], "issued": N}
"""

import argparse
import base64
import binascii
import datetime
import json
import os
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"requests": [], "issued": 0}
CONFIG = {"enroll": "ok", "reenroll": "ok", "validity_seconds": 86400, "retry_after": 1,
          "basic": "factory:s3cret", "bearer": "", "ca": "fleet-ca", "cacerts": "ca"}
FLEET_DNS = ("CN=Test Fleet CA", "CN=Test Fleet CA 2")
PKI = ""


def openssl(*args, data=None):
    r = subprocess.run(["openssl", *args], input=data, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (args[0], r.stderr.decode(errors="replace")))
    return r.stdout


def asn1_time(t):
    return t.strftime("%Y%m%d%H%M%SZ")


def sign(csr_pem, ca, subject=None, not_before=None, not_after=None):
    """Issues a client certificate for the CSR with `openssl ca` (RFC 7030 leaves the CA's policy to the CA)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    nb = not_before or now
    na = not_after or now + datetime.timedelta(seconds=int(CONFIG["validity_seconds"]))
    with tempfile.TemporaryDirectory(dir=PKI) as tmp:
        csr = os.path.join(tmp, "req.csr")
        out = os.path.join(tmp, "cert.pem")
        with open(csr, "wb") as f:
            f.write(csr_pem)
        args = ["ca", "-batch", "-config", os.path.join(PKI, "ca.cnf"), "-cert", os.path.join(PKI, ca + ".pem"),
                "-keyfile", os.path.join(PKI, ca + ".key"), "-in", csr, "-out", out, "-notext",
                "-startdate", asn1_time(nb), "-enddate", asn1_time(na)]
        if subject:
            args += ["-subj", subject]
        with LOCK:  # one openssl ca at a time: it rewrites its database
            openssl(*args)
        with open(out, "rb") as f:
            return f.read()


def certs_only(pem):
    """A degenerate certs-only PKCS#7 SignedData (RFC 7030 §4.1.3/§4.2.3), DER, base64 with line breaks."""
    with tempfile.NamedTemporaryFile(dir=PKI, suffix=".pem") as f:
        f.write(pem)
        f.flush()
        der = openssl("crl2pkcs7", "-nocrl", "-certfile", f.name, "-outform", "DER")
    return base64.encodebytes(der)


def csr_subject(csr_pem):
    out = openssl("req", "-noout", "-subject", "-nameopt", "RFC2253", data=csr_pem).decode().strip()
    return out[len("subject="):] if out.startswith("subject=") else out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)

    def reply(self, status, body=b"", ctype="text/plain", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def record(self, status, auth):
        with LOCK:
            STATE["requests"].append({"path": self.path, "status": status, "auth": auth})

    # -- authentication (RFC 7030 §3.2.3, §3.3.2) --
    def client_cert(self):
        """The verified client certificate's subject and issuer, from nginx."""
        if self.headers.get("X-Ssl-Client-Verify", "") != "SUCCESS":
            return None
        return {"subject": self.headers.get("X-Ssl-Client-S-Dn", ""),
                "issuer": self.headers.get("X-Ssl-Client-I-Dn", "")}

    def http_auth(self):
        h = self.headers.get("Authorization", "")
        if h.startswith("Basic ") and CONFIG.get("basic"):
            try:
                if base64.b64decode(h[6:].strip(), validate=True).decode() == CONFIG["basic"]:
                    return "basic"
            except (binascii.Error, UnicodeDecodeError):
                return None
        if h.startswith("Bearer ") and CONFIG.get("bearer") and h[7:].strip() == CONFIG["bearer"]:
            return "bearer"
        return None

    def read_csr(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if not self.headers.get("Content-Type", "").startswith("application/pkcs10"):
            return None, "Content-Type must be application/pkcs10 (RFC 7030 §4.2.1)"
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error:
            return None, "the body is not base64 (RFC 7030 §4.2.1)"
        try:
            pem = openssl("req", "-inform", "DER", "-verify", "-outform", "PEM", data=der)
        except RuntimeError as e:
            return None, "not a valid PKCS#10 request: %s" % e
        return pem, None

    def do_GET(self):
        if self.path == "/admin/state":
            with LOCK:
                body = json.dumps(STATE).encode()
            return self.reply(200, body, "application/json")
        if self.path == "/.well-known/est/cacerts":
            with LOCK:
                ca, mode = CONFIG["ca"], CONFIG["cacerts"]
            if mode == "unrelated":
                names = ["other-ca.pem"]
            elif mode == "new-only":
                names = ["fleet-ca-2.pem"]
            elif ca == "fleet-ca-2":
                names = ["fleet-ca-2.pem", "fleet-ca.pem", "new-with-old.pem"]
            else:
                names = ["fleet-ca.pem"]
            pem = b""
            for n in names:
                with open(os.path.join(PKI, n), "rb") as f:
                    pem += f.read()
            body = certs_only(pem)
            cert = self.client_cert()
            if cert and cert["issuer"] == "CN=Factory Bootstrap CA":
                auth = "bootstrap-certificate"
            elif cert:
                auth = "certificate"
            else:
                auth = self.http_auth() or "none"
            self.record(200, auth)
            return self.reply(200, body, "application/pkcs7-mime", {"Content-Transfer-Encoding": "base64"})
        self.record(404, "none")
        self.reply(404, b"not found\n")

    def do_POST(self):
        if self.path == "/admin/config":
            n = int(self.headers.get("Content-Length", "0"))
            with LOCK:
                CONFIG.update(json.loads(self.rfile.read(n) or b"{}"))
            return self.reply(200, b"{}", "application/json")
        if self.path not in ("/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll"):
            self.record(404, "none")
            return self.reply(404, b"not found\n")
        reenroll = self.path.endswith("simplereenroll")
        cert = self.client_cert()
        if reenroll:
            # §4.2.2: authenticated by the certificate being renewed.
            auth = "certificate" if cert and cert["issuer"] in FLEET_DNS else None
        elif cert and cert["issuer"] == "CN=Factory Bootstrap CA":
            auth = "bootstrap-certificate"
        else:
            auth = self.http_auth()
        csr, err = self.read_csr()
        if auth is None:
            self.record(401, "none")
            return self.reply(401, b"authentication required\n", headers={"WWW-Authenticate": 'Basic realm="est"'})
        if err:
            self.record(400, auth)
            return self.reply(400, err.encode() + b"\n")
        mode = CONFIG["reenroll" if reenroll else "enroll"]
        if mode == "refuse":
            self.record(403, auth)
            return self.reply(403, b"enrolment refused by policy\n")
        if mode == "retry":
            self.record(202, auth)
            return self.reply(202, b"pending manual approval\n", headers={"Retry-After": str(CONFIG["retry_after"])})
        subject = csr_subject(csr)
        if reenroll and subject != cert["subject"]:
            self.record(400, auth)
            return self.reply(400, b"the CSR's subject is not the certificate's (RFC 7030 4.2.2)\n")
        try:
            if mode == "wrong-key":
                other = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                "-keyout", "/dev/null", "-subj", "/" + subject.replace(",", "/"))
                pem = sign(other, "fleet-ca")
            elif mode == "wrong-cn":
                pem = sign(csr, "fleet-ca", subject="/CN=another-device")
            elif mode == "wrong-ca":
                pem = sign(csr, "other-ca")
            elif mode == "expired":
                now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
                pem = sign(csr, "fleet-ca", not_before=now - datetime.timedelta(hours=2),
                           not_after=now - datetime.timedelta(hours=1))
            else:
                pem = sign(csr, CONFIG["ca"])
        except RuntimeError as e:
            self.record(500, auth)
            return self.reply(500, str(e).encode())
        with LOCK:
            STATE["issued"] += 1
        self.record(200, auth)
        if mode == "garbage":
            body = base64.encodebytes(b"\x30\x82\x01\x00 this is not a PKCS#7 structure")
        elif mode == "not-base64":
            body = b"%%% not base64 %%%\n"
        else:
            body = certs_only(pem)
        self.reply(200, body, "application/pkcs7-mime; smime-type=certs-only", {"Content-Transfer-Encoding": "base64"})


def main():
    global PKI
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pki", required=True)
    a = ap.parse_args()
    PKI = a.pki
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
