#!/usr/bin/env python3
"""A small Eclipse hawkBit DDI test server (stdlib only, not shipped to devices).

It speaks the device side of hawkBit's Direct Device Integration API:

  GET  /{tenant}/controller/v1/{cid}                               poll (ETag / 304)
  PUT  /{tenant}/controller/v1/{cid}/configData                    attributes (mode merge|replace|remove)
  GET  /{tenant}/controller/v1/{cid}/deploymentBase/{aid}          deployment
  POST /{tenant}/controller/v1/{cid}/deploymentBase/{aid}/feedback
  GET  /{tenant}/controller/v1/{cid}/installedBase/{aid}
  GET  /{tenant}/controller/v1/{cid}/cancelAction/{aid}
  POST /{tenant}/controller/v1/{cid}/cancelAction/{aid}/feedback
  GET  /{tenant}/controller/v1/{cid}/confirmationBase/{aid}            (confirmation flow)
  POST /{tenant}/controller/v1/{cid}/confirmationBase/{aid}/feedback   {"confirmation": "confirmed"|"denied"}
  GET  /{tenant}/controller/v1/{cid}/softwaremodules/{smid}/artifacts/{file}   (Range / 206 / 416, ETag)

Status codes as hawkBit answers them: 401 (no or wrong credentials), 404 (unknown
target/action/artifact), 405 (wrong method), 409 (conflicting assignment or
cancel feedback for an action that is not being cancelled), 410 (feedback for a
closed action), 429 (fault mode).

Authentication (the reverse-proxy setup hawkBit documents): nginx terminates
mutual TLS and passes the client certificate's CN in X-Ssl-Client-Cn and the
issuer hash in X-Ssl-Issuer-Hash-1; the CN must equal the controllerId and the
hash must be a trusted one. Or "Authorization: TargetToken <t>" / "GatewayToken <t>".

A control API for tests lives under /admin (never proxied by nginx):

  GET  /admin/state                        everything (targets, actions, feedback, requests)
  POST /admin/config   {"sleep": "00:00:02", "mtls": true, "trusted_issuer_hashes": [...],
                        "gateway_token": "...", "link_base": "https://other:1",
                        "accel_redirect": "/_mbl_artifact",
                        "confirmation_required": true}   (new actions wait for the device's consent)
  POST /admin/targets  {"id": "dev1", "token": "secret"}           target token
  POST /admin/artifacts {"name": "fw.bin", "path": "/tmp/x"}       or {"name":..., "data": "text"}
  POST /admin/deployments {"target": "dev1", "download": "forced", "update": "forced",
                        "maintenanceWindow": null|"available"|"unavailable",
                        "chunks": [{"part": "os", "name": "fw", "version": "2",
                                    "artifacts": ["fw.bin"], "metadata": [{"key":..,"value":..}]}]}
                        -> {"id": "3"}   (409 when the target has an open action)
  POST /admin/actions/{aid}  {"maintenanceWindow": "available"} | {"cancel": true}
  POST /admin/request-config {"target": "dev1"}      ask for configData on next poll
  POST /admin/faults   {"cut_after": N, "cut_count": k, "throttle_bps": B, "status": 429|503,
                        "status_count": k, "retry_after": s, "drop_count": k,
                        "poll_body": "raw text", "poll_status": 200, "wrong_size": true,
                        "corrupt": true, "redirect_loop": true}
  POST /admin/reset-log
"""

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.RLock()


class State:
    def __init__(self, tenant, sleep):
        self.tenant = tenant
        self.config = {
            "sleep": sleep,
            "mtls": True,
            "trusted_issuer_hashes": [],
            "gateway_token": None,
            "link_base": None,
            # When set, an artifact GET that passed every check (and no fault mode
            # touches artifacts) is answered with X-Accel-Redirect: <prefix><path>,
            # and nginx serves the file itself (Range, 206, 416), as production
            # setups put a web server or CDN in front of the artifact store.
            "accel_redirect": None,
            # hawkBit's user-consent flow: new actions start in WAIT_FOR_CONFIRMATION
            # and the poll offers confirmationBase until the device confirms.
            "confirmation_required": False,
        }
        self.targets = {}  # id -> {token, attributes, config_requested, polls}
        self.actions = {}  # id -> dict
        self.artifacts = {}  # name -> {path, size, sha256, sha1, md5, smid}
        self.next_action = 1
        self.next_sm = 1
        self.faults = {}
        self.requests = []

    def target(self, cid):
        t = self.targets.get(cid)
        if t is None:
            t = {"id": cid, "token": None, "attributes": {}, "config_requested": True, "polls": 0,
                 "last_poll": None, "config_puts": 0}
            self.targets[cid] = t
        return t


STATE = None
CONTROLLER = re.compile(r"^/([^/]+)/controller/v1/([^/?]+)(/[^?]*)?(\?.*)?$")
MAX_BODY = 256 * 1024


def hashes_of(path):
    h256, h1, h5 = hashlib.sha256(), hashlib.sha1(), hashlib.md5()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            size += len(b)
            h256.update(b)
            h1.update(b)
            h5.update(b)
    return size, h256.hexdigest(), h1.hexdigest(), h5.hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ddi-test-server/1"

    def log_message(self, fmt, *args):  # quiet; the request log is in /admin/state
        if os.environ.get("DDI_SERVER_VERBOSE"):
            sys.stderr.write("ddi: " + fmt % args + "\n")

    # --- plumbing -------------------------------------------------------------
    def record(self, status):
        with LOCK:
            STATE.requests.append({"method": self.command, "path": self.path, "status": status,
                                   "time": time.time(), "cn": self.headers.get("X-Ssl-Client-Cn", ""),
                                   "auth": (self.headers.get("Authorization") or "").split(" ")[0]})

    def send_json(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_bytes(status, body, "application/hal+json;charset=UTF-8", extra)

    def send_bytes(self, status, body, ctype="application/json", extra=None):
        self.record(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, msg, extra=None):
        self.send_json(status, {"errorCode": "hawkbit.server.error.%d" % status, "message": msg}, extra)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            return None
        return self.rfile.read(n) if n else b""

    def link(self, rel_path):
        base = STATE.config.get("link_base")
        if not base:
            proto = self.headers.get("X-Forwarded-Proto", "http")
            host = self.headers.get("Host", "localhost")
            base = "%s://%s" % (proto, host)
        return {"href": base + rel_path}

    # --- dispatch -------------------------------------------------------------
    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        try:
            if self.path.startswith("/admin/"):
                return self.admin(method)
            return self.ddi(method)
        except (BrokenPipeError, ConnectionResetError):
            return None

    def consume_fault(self, key):
        with LOCK:
            n = STATE.faults.get(key, 0)
            if n > 0:
                STATE.faults[key] = n - 1
                return True
            return False

    def ddi(self, method):
        m = CONTROLLER.match(self.path)
        if not m:
            self.read_body()
            return self.error(404, "no such resource")
        tenant, cid, rest, _query = m.group(1), m.group(2), m.group(3) or "", m.group(4)
        if self.consume_fault("drop_count"):
            self.record(0)
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        if self.consume_fault("status_count"):
            self.read_body()
            code = STATE.faults.get("status", 503)
            extra = {}
            if STATE.faults.get("retry_after") is not None:
                extra["Retry-After"] = str(STATE.faults["retry_after"])
            return self.error(code, "fault injected", extra)
        if tenant.lower() != STATE.tenant.lower():
            self.read_body()
            return self.error(404, "unknown tenant")
        if not self.authenticated(cid):
            self.read_body()
            return self.error(401, "authentication failed")
        with LOCK:
            target = STATE.target(cid)
        base = "/%s/controller/v1/%s" % (tenant, cid)
        if rest in ("", "/"):
            if method not in ("GET", "HEAD"):
                return self.error(405, "method not allowed")
            return self.poll(target, base)
        if rest == "/configData":
            if method != "PUT":
                return self.error(405, "method not allowed")
            return self.config_data(target)
        parts = rest.strip("/").split("/")
        if parts[0] in ("deploymentBase", "installedBase", "cancelAction", "confirmationBase") and len(parts) >= 2:
            with LOCK:
                action = STATE.actions.get(parts[1])
            if action is None or action["target"] != cid:
                self.read_body()
                return self.error(404, "action %s not found" % parts[1])
            if len(parts) == 2:
                if method != "GET":
                    self.read_body()
                    return self.error(405, "method not allowed")
                if parts[0] == "cancelAction":
                    if action["status"] not in ("CANCELING", "CANCELED"):
                        return self.error(404, "action is not being cancelled")
                    return self.send_json(200, {"id": action["id"], "cancelAction": {"stopId": action["id"]}})
                if parts[0] == "confirmationBase" and action["status"] != "WAIT_FOR_CONFIRMATION":
                    return self.error(404, "action is not waiting for confirmation")
                if parts[0] == "deploymentBase" and action["status"] == "WAIT_FOR_CONFIRMATION":
                    return self.error(404, "action is waiting for confirmation")
                return self.deployment(action, base, parts[0])
            if len(parts) == 3 and parts[2] == "feedback":
                if method != "POST":
                    return self.error(405, "method not allowed")
                if parts[0] == "confirmationBase":
                    return self.confirmation_feedback(action)
                if action["status"] == "WAIT_FOR_CONFIRMATION":
                    self.read_body()
                    return self.error(409, "action %s is waiting for confirmation" % action["id"])
                return self.feedback(action, parts[0])
        if parts[0] == "softwaremodules" and len(parts) == 4 and parts[2] == "artifacts":
            if method not in ("GET", "HEAD"):
                return self.error(405, "method not allowed")
            return self.artifact(parts[1], parts[3])
        self.read_body()
        return self.error(404, "no such resource")

    def authenticated(self, cid):
        cfg = STATE.config
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("TargetToken "):
            with LOCK:
                t = STATE.targets.get(cid)
            return t is not None and t.get("token") and auth[len("TargetToken "):] == t["token"]
        if auth.startswith("GatewayToken "):
            return cfg.get("gateway_token") and auth[len("GatewayToken "):] == cfg["gateway_token"]
        if cfg.get("mtls"):
            cn = self.headers.get("X-Ssl-Client-Cn", "")
            issuer = self.headers.get("X-Ssl-Issuer-Hash-1", "")
            trusted = cfg.get("trusted_issuer_hashes") or []
            return cn == cid and cn != "" and (not trusted or issuer in trusted)
        return False

    # --- DDI resources ----------------------------------------------------------
    def open_action(self, cid):
        for a in STATE.actions.values():
            if a["target"] == cid and a["status"] in ("RUNNING", "CANCELING", "WAIT_FOR_CONFIRMATION"):
                return a
        return None

    def poll(self, target, base):
        with LOCK:
            target["polls"] += 1
            target["last_poll"] = time.time()
            raw = STATE.faults.get("poll_body")
            if STATE.faults.get("redirect_loop"):
                return self.send_bytes(302, b"", extra={"Location": self.path})
        if raw is not None:
            return self.send_bytes(STATE.faults.get("poll_status", 200), raw.encode(),
                                   "application/hal+json;charset=UTF-8")
        links = {}
        with LOCK:
            a = self.open_action(target["id"])
            if a is not None and a["status"] == "CANCELING":
                links["cancelAction"] = self.link("%s/cancelAction/%s" % (base, a["id"]))
            elif a is not None and a["status"] == "WAIT_FOR_CONFIRMATION":
                links["confirmationBase"] = self.link("%s/confirmationBase/%s?c=%s" % (base, a["id"],
                                                                                   self.action_hash(a)))
            elif a is not None:
                links["deploymentBase"] = self.link("%s/deploymentBase/%s?c=%s" % (base, a["id"], self.action_hash(a)))
            finished = [x for x in STATE.actions.values()
                        if x["target"] == target["id"] and x["status"] in ("FINISHED",)]
            if finished and "deploymentBase" not in links:
                last = max(finished, key=lambda x: int(x["id"]))
                links["installedBase"] = self.link("%s/installedBase/%s" % (base, last["id"]))
            if target["config_requested"]:
                links["configData"] = self.link("%s/configData" % base)
            body = {"config": {"polling": {"sleep": STATE.config["sleep"]}}}
            if links:
                body["_links"] = links
        data = json.dumps(body).encode()
        etag = '"%s"' % hashlib.sha1(data).hexdigest()
        if self.headers.get("If-None-Match") == etag:
            self.record(304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self.send_bytes(200, data, "application/hal+json;charset=UTF-8", {"ETag": etag})

    @staticmethod
    def action_hash(a):
        key = "%s/%s/%s" % (a["download"], a["update"], a.get("maintenanceWindow"))
        return str(int(hashlib.sha1(key.encode()).hexdigest()[:7], 16))

    def deployment(self, action, base, kind):
        if kind == "installedBase" and action["status"] != "FINISHED":
            return self.error(404, "action is not installed")
        chunks = []
        for c in action["chunks"]:
            arts = []
            for name in c["artifacts"]:
                art = STATE.artifacts[name]
                href = "%s/softwaremodules/%s/artifacts/%s" % (base, art["smid"], name)
                size = art["size"] + (1 if STATE.faults.get("wrong_size") else 0)
                arts.append({"filename": name, "size": size,
                             "hashes": {"sha1": art["sha1"], "md5": art["md5"], "sha256": art["sha256"]},
                             "_links": {"download": self.link(href), "md5sum": self.link(href + ".MD5SUM")}})
            chunk = {"part": c.get("part", "os"), "version": c.get("version", "1"),
                     "name": c.get("name", "chunk"), "artifacts": arts}
            if c.get("metadata"):
                chunk["metadata"] = c["metadata"]
            chunks.append(chunk)
        dep = {"download": action["download"], "update": action["update"], "chunks": chunks}
        if action.get("maintenanceWindow"):
            dep["maintenanceWindow"] = action["maintenanceWindow"]
        body = {"id": action["id"], "deployment": dep,
                "actionHistory": {"status": action["status"],
                                  "messages": [m for f in action["feedback"][-5:] for m in f.get("details", [])]}}
        if kind == "installedBase":
            body = {"id": action["id"], "deployment": dep}
        if kind == "confirmationBase":
            body = {"id": action["id"], "confirmation": dep, "actionHistory": body["actionHistory"]}
        self.send_json(200, body)

    def confirmation_feedback(self, action):
        raw = self.read_body()
        if raw is None:
            return self.error(413, "body too large")
        try:
            fb = json.loads(raw)
            answer = fb["confirmation"]
            details = fb.get("details", [])
            code = fb.get("code")
            if answer not in ("confirmed", "denied") or not isinstance(details, list) or \
                    (code is not None and not isinstance(code, int)):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self.error(400, "malformed confirmation feedback")
        with LOCK:
            if action["status"] != "WAIT_FOR_CONFIRMATION":
                return self.error(410 if action["status"] not in ("RUNNING", "CANCELING") else 409,
                                  "action %s is not waiting for confirmation" % action["id"])
            action["feedback"].append({"kind": "confirmationBase", "execution": answer, "finished": "none",
                                       "progress": None, "details": details, "time": time.time()})
            if answer == "confirmed":
                action["status"] = "RUNNING"
            # denied: hawkBit keeps the action waiting; the device may confirm later.
        self.send_bytes(200, b"", "application/json")

    def feedback(self, action, kind):
        raw = self.read_body()
        if raw is None:
            return self.error(413, "body too large")
        try:
            fb = json.loads(raw)
            status = fb["status"]
            execution = status["execution"]
            finished = status["result"]["finished"]
        except (ValueError, KeyError, TypeError):
            return self.error(400, "malformed feedback")
        valid_exec = ("closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download")
        if execution not in valid_exec or finished not in ("success", "failure", "none"):
            return self.error(400, "invalid execution or result")
        details = status.get("details", [])
        if not isinstance(details, list) or len(details) > 48:
            return self.error(400, "at most 48 details")
        with LOCK:
            if action["status"] in ("FINISHED", "ERROR", "CANCELED", "DOWNLOADED"):
                return self.error(410, "action %s is closed" % action["id"])
            if kind == "cancelAction" and action["status"] != "CANCELING":
                return self.error(409, "action %s is not being cancelled" % action["id"])
            action["feedback"].append({"kind": kind, "execution": execution, "finished": finished,
                                       "progress": status["result"].get("progress"), "details": details,
                                       "time": time.time()})
            if kind == "cancelAction":
                if execution in ("closed", "canceled") and finished == "success":
                    action["status"] = "CANCELED"
                elif execution == "rejected" or finished == "failure":
                    action["status"] = "RUNNING"
                    action["cancel_rejected"] = True
            else:
                if execution == "closed":
                    action["status"] = "FINISHED" if finished == "success" else "ERROR"
                elif execution == "downloaded" and action["download_only"]:
                    action["status"] = "DOWNLOADED"
                elif execution == "canceled":
                    action["status"] = "CANCELED"
        self.send_bytes(200, b"", "application/json")

    def config_data(self, target):
        raw = self.read_body()
        if raw is None:
            return self.error(413, "body too large")
        try:
            body = json.loads(raw)
            data = body["data"]
            mode = body.get("mode", "merge")
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self.error(400, "malformed configData")
        if any(len(k) > 128 or len(v) > 128 for k, v in data.items()):
            return self.error(400, "attribute key or value longer than 128 characters")
        with LOCK:
            if mode == "replace":
                target["attributes"] = dict(data)
            elif mode == "remove":
                for k in data:
                    target["attributes"].pop(k, None)
            else:
                target["attributes"].update(data)
            if len(target["attributes"]) > 100:
                return self.error(400, "more than 100 attributes")
            target["config_requested"] = False
            target["config_puts"] += 1
        self.send_bytes(200, b"", "application/json")

    def artifact(self, smid, filename):
        md5sum = filename.endswith(".MD5SUM")
        if md5sum:
            filename = filename[: -len(".MD5SUM")]
        art = STATE.artifacts.get(filename)
        if art is None or str(art["smid"]) != smid:
            return self.error(404, "artifact not found")
        if md5sum:
            return self.send_bytes(200, ("%s  %s\n" % (art["md5"], filename)).encode(), "text/plain")
        size = art["size"]
        etag = '"%s"' % art["sha1"]
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and (self.headers.get("If-Range") in (None, etag)):
            m = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                return self.error(416, "bad range", {"Content-Range": "bytes */%d" % size})
            if m.group(1) == "":
                start, end = max(0, size - int(m.group(2))), size - 1
            else:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
                end = min(end, size - 1)
            if start >= size or start > end:
                return self.error(416, "range not satisfiable", {"Content-Range": "bytes */%d" % size})
            status = 206
        accel = STATE.config.get("accel_redirect")
        faulty = any(STATE.faults.get(k) for k in ("cut_count", "throttle_bps", "corrupt"))
        if accel and not faulty and self.command == "GET":
            # nginx answers the (possibly ranged) request from the file.
            self.record("accel")
            self.send_response(200)
            self.send_header("X-Accel-Redirect", accel + os.path.abspath(art["path"]))
            self.send_header("Content-Disposition", "attachment;filename=%s" % filename)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        length = end - start + 1
        self.record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Content-Disposition", "attachment;filename=%s" % filename)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if self.command == "HEAD":
            return None
        cut = None
        if STATE.faults.get("cut_count", 0) > 0 and STATE.faults.get("cut_after") is not None:
            self.consume_fault("cut_count")
            cut = STATE.faults["cut_after"]
        bps = STATE.faults.get("throttle_bps")
        corrupt = STATE.faults.get("corrupt")
        sent = 0
        with open(art["path"], "rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                n = min(left, 65536 if not bps else max(1, min(65536, bps // 10)))
                if cut is not None:
                    n = min(n, cut - sent)
                    if n <= 0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                b = f.read(n)
                if not b:
                    break
                if corrupt and sent == 0:
                    b = bytes([b[0] ^ 0xFF]) + b[1:]
                self.wfile.write(b)
                sent += len(b)
                left -= len(b)
                if bps:
                    time.sleep(len(b) / float(bps))
        return None

    # --- control API ------------------------------------------------------------
    def admin(self, method):
        raw = self.read_body() or b"{}"
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self.send_json(400, {"message": "bad json"})
        path = self.path.split("?")[0]
        with LOCK:
            if path == "/admin/state" and method == "GET":
                return self.send_json(200, {"config": STATE.config, "targets": STATE.targets,
                                            "actions": STATE.actions, "requests": STATE.requests,
                                            "faults": STATE.faults})
            if method != "POST":
                return self.send_json(405, {"message": "POST"})
            if path == "/admin/config":
                STATE.config.update(body)
                return self.send_json(200, STATE.config)
            if path == "/admin/targets":
                t = STATE.target(body["id"])
                t["token"] = body.get("token")
                return self.send_json(200, t)
            if path == "/admin/artifacts":
                p = body.get("path")
                if p is None:
                    p = os.path.join(ARGS.artifact_dir, body["name"])
                    with open(p, "wb") as f:
                        f.write(body.get("data", "").encode())
                size, s256, s1, m5 = hashes_of(p)
                STATE.artifacts[body["name"]] = {"path": p, "size": size, "sha256": s256, "sha1": s1, "md5": m5,
                                                 "smid": STATE.next_sm}
                STATE.next_sm += 1
                return self.send_json(200, STATE.artifacts[body["name"]])
            if path == "/admin/deployments":
                tid = body["target"]
                STATE.target(tid)
                if self.open_action(tid) is not None:
                    return self.send_json(409, {"message": "target has an open action"})
                for c in body.get("chunks", []):
                    for a in c.get("artifacts", []):
                        if a not in STATE.artifacts:
                            return self.send_json(404, {"message": "no artifact " + a})
                aid = str(STATE.next_action)
                STATE.next_action += 1
                first = "WAIT_FOR_CONFIRMATION" if STATE.config.get("confirmation_required") else "RUNNING"
                STATE.actions[aid] = {"id": aid, "target": tid, "status": first,
                                      "download": body.get("download", "forced"),
                                      "update": body.get("update", "forced"),
                                      "download_only": body.get("update") == "skip",
                                      "maintenanceWindow": body.get("maintenanceWindow"),
                                      "chunks": body.get("chunks", []), "feedback": []}
                return self.send_json(200, {"id": aid})
            m = re.match(r"^/admin/actions/([^/]+)$", path)
            if m:
                a = STATE.actions.get(m.group(1))
                if a is None:
                    return self.send_json(404, {"message": "no action"})
                if body.get("cancel"):
                    if a["status"] != "RUNNING":
                        return self.send_json(409, {"message": "action is " + a["status"]})
                    a["status"] = "CANCELING"
                if "maintenanceWindow" in body:
                    a["maintenanceWindow"] = body["maintenanceWindow"]
                return self.send_json(200, a)
            if path == "/admin/request-config":
                STATE.target(body["target"])["config_requested"] = True
                return self.send_json(200, {})
            if path == "/admin/faults":
                STATE.faults = body
                return self.send_json(200, STATE.faults)
            if path == "/admin/reset-log":
                STATE.requests = []
                return self.send_json(200, {})
        return self.send_json(404, {"message": "no such admin resource"})


def main():
    global STATE, ARGS
    ap = argparse.ArgumentParser(description="hawkBit DDI test server (tests and demo only)")
    ap.add_argument("--port", type=int, default=0, help="listen port (0: any; printed on stdout)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tenant", default="DEFAULT")
    ap.add_argument("--sleep", default="00:05:00", help="config.polling.sleep sent to devices")
    ap.add_argument("--artifact-dir", default="/tmp", help="where /admin/artifacts with data are written")
    ap.add_argument("--gateway-token", default=None)
    ap.add_argument("--trusted-issuer-hash", action="append", default=[])
    ARGS = ap.parse_args()
    STATE = State(ARGS.tenant, ARGS.sleep)
    STATE.config["gateway_token"] = ARGS.gateway_token
    STATE.config["trusted_issuer_hashes"] = ARGS.trusted_issuer_hash
    srv = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    srv.daemon_threads = True
    print("listening %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


ARGS = None
if __name__ == "__main__":
    main()
