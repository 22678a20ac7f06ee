#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An Eclipse hawkBit DDI test server (stdlib only, tests and demo; never shipped).

It answers the device side of hawkBit's Direct Device Integration API the way a
DEFAULT hawkBit server does, as its sources define it (eclipse-hawkbit/hawkbit
HEAD 67ca1c4; see /work/shared/HAWKBIT-DDI.md). Each default names the hawkBit
file it comes from. Paths below: API = hawkbit-ddi/hawkbit-ddi-api/.../
DdiRootControllerRestApi.java, CTRL = hawkbit-ddi/hawkbit-ddi-resource/.../
DdiRootController.java, DCH = DataConversionHelper.java (same folder), MODEL =
hawkbit-ddi/hawkbit-ddi-api/.../ddi/json/model/, JCM = hawkbit-repository/
hawkbit-repository-jpa/.../management/JpaControllerManagement.java.

  GET  /{tenant}/controller/v1/{cid}                               poll (ETag / 304)
  PUT  /{tenant}/controller/v1/{cid}/configData                    attributes (mode merge|replace|remove)
  GET  /{tenant}/controller/v1/{cid}/deploymentBase/{aid}?c=&actionHistory=N
  POST /{tenant}/controller/v1/{cid}/deploymentBase/{aid}/feedback
  GET  /{tenant}/controller/v1/{cid}/installedBase/{aid}?actionHistory=N
  GET  /{tenant}/controller/v1/{cid}/cancelAction/{aid}
  POST /{tenant}/controller/v1/{cid}/cancelAction/{aid}/feedback
  GET  /{tenant}/controller/v1/{cid}/confirmationBase/{aid}            (confirmation flow)
  POST /{tenant}/controller/v1/{cid}/confirmationBase/{aid}/feedback   {"confirmation": "confirmed"|"denied"}
  GET  /{tenant}/controller/v1/{cid}/softwaremodules/{smid}/artifacts/{file}[.MD5SUM]  (Range / 206 / 416, ETag)

Authentication (the reverse-proxy set-up hawkBit documents, docs/authentication.md):
nginx terminates mutual TLS and passes the client certificate's CN in
X-Ssl-Client-Cn and the issuer hash in X-Ssl-Issuer-Hash-1 (the names before
hawkBit 1.0.0; X-Controller-Id / X-Authority since); the CN must equal the
controllerId and the hash must be a trusted one. Or "Authorization: TargetToken
<t>" / "GatewayToken <t>". A failure is 401 (ControllerSecurityConfiguration).

Defaults that differ from what the project assumed before (issue 13):
- artifact links: only "download-http" and "md5sum-http", with the scheme,
  host and port of the request (hawkbit-autoconfigure/.../
  hawkbit-artifactdl-defaults.properties: ref = {protocolRequest}://
  {hostnameRequest}:{portRequest}/...); "download"/"md5sum" only when the
  operator configures them (config "link_rels").
- download/update are computed from the action's type as CTRL
  calculateDownloadType / calculateUpdateType / calculateMaintenanceWindow do:
  soft -> attempt/attempt, forced (or timeforced) -> forced/forced,
  downloadonly -> forced/skip, a maintenance schedule -> update "skip" with
  maintenanceWindow "unavailable" outside the window, the download type inside.
  hawkBit never sends download "skip" (the model allows it, MODEL
  DdiDeployment.HandlingType): only with the action option "download": "skip".
- a distribution set is one chunk per software module, each with all of its
  artifacts (DCH createChunks); the type key "application" is sent as "bApp",
  "runtime" as "jvm" (DCH mapChunkLegacyKeys).
- actionHistory only when asked (?actionHistory=N; 0 = none, <0 = the maximum,
  100: RepositoryConstants.MAX_ACTION_HISTORY_MSG_COUNT), newest first, device
  messages only (JCM getActionHistoryMessages).
- feedback mapping (CTRL generateUpdateStatus, JCM onActionStatusUpdate):
  closed+failure -> ERROR (closed), closed+success|none -> FINISHED (closed,
  configData asked for again), downloaded -> DOWNLOADED (closes a downloadonly
  action), canceled -> a CANCELED entry (the action stays open), anything else
  -> RUNNING; feedback to a closed action -> 410; more than 50 details -> 429.
- cancel feedback (CTRL generateActionCancelStatus, JCM addCancelActionStatus):
  closed+success|none -> CANCELED; closed+failure -> ERROR, back to RUNNING;
  rejected -> back to RUNNING; canceled -> a WARNING only (the action stays
  CANCELING); an action not being cancelled -> 405.
- configData (JCM updateControllerAttributes): mode merge (default), replace or
  remove; keys and values at most 128 characters of
  [a-zA-Z0-9_-!@#$%^&*()+=[]{}|;:'",.<>/\\?\\s], otherwise 400; empty data 400
  (MODEL DdiConfigData @NotEmpty); more than 100 attributes (only checked when
  the set grows) -> 429 (quota).
- artifacts are served only to a target with an active, not cancelled action
  that holds the module, otherwise 404 (CTRL getAction; "skip_artifact_access_check"
  turns that off as hawkbit.ddi.skip-artifact-access-check.tenants does).

A control API for tests lives under /admin (never proxied by nginx):

  GET  /admin/state                        everything (targets, actions, feedback, requests)
  POST /admin/config   {"sleep": "00:00:02", "mtls": true, "trusted_issuer_hashes": [...],
                        "gateway_token": "...",
                        "link_base": "https://other:1",        base of every link (default: the request's)
                        "link_rels": ["download", "md5sum"],   artifact link rels (default download-http, md5sum-http)
                        "artifact_base": "https://cdn:1/cdn",  artifact links point there (external storage)
                        "artifact_redirect": "https://cdn:1/cdn", artifact GETs answer 302 to <that>/<filename>
                        "skip_artifact_access_check": false,
                        "accel_redirect": "/_mbl_artifact",
                        "confirmation_required": true}   (new actions wait for the device's consent)
  POST /admin/targets  {"id": "dev1", "token": "secret"}           target token
  POST /admin/artifacts {"name": "fw.bin", "path": "/tmp/x"}       or {"name":..., "data": "text"}
                        each artifact is its own software module unless "module" names one
  POST /admin/deployments {"target": "dev1",
                        "type": "soft|forced|timeforced|downloadonly",
                        "maintenance": null | {"available": false},
                        "chunks": [{"part": "os", "name": "fw", "version": "2",
                                    "artifacts": ["fw.bin", ...], "metadata": [{"key":..,"value":..}]}]}
                        -> {"id": "3"}   (409 when the target has an open action)
                        Compatibility: without "type", the older form is read as hawkBit would
                        have made it: "update": "skip" without a window = downloadonly,
                        "download"/"update" "attempt" = soft, otherwise forced;
                        "maintenanceWindow": "available"|"unavailable" = a schedule.
  POST /admin/actions/{aid}  {"maintenanceWindow": "available"|"unavailable"} | {"cancel": true}
                        | {"type": "forced"} | {"download": "skip"|null}
  POST /admin/request-config {"target": "dev1"}      ask for configData on next poll
  POST /admin/faults   {"cut_after": N, "cut_count": k, "throttle_bps": B, "status": 429|503,
                        "status_count": k, "retry_after": s, "drop_count": k,
                        "poll_body": "raw text", "poll_status": 200, "poll_content_type": "...",
                        "deployment_body": "raw text", "deployment_content_type": "...",
                        "wrong_size": true, "corrupt": true, "redirect_loop": true,
                        "artifact_redirect_loop": true, "artifact_status": 404}
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
from urllib.parse import parse_qs
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.RLock()

# hawkbit-repository/hawkbit-repository-api/.../RepositoryConstants.java MAX_ACTION_HISTORY_MSG_COUNT
MAX_ACTION_HISTORY = 100
# hawkbit-repository/hawkbit-repository-api/.../model/Target.java CONTROLLER_ATTRIBUTE_MAX_KEY_SIZE / _VALUE_SIZE
MAX_ATTRIBUTE_LENGTH = 128
# JCM PATTERN (Java's \s is [ \t\n\x0B\f\r])
ATTRIBUTE_PATTERN = re.compile(r"^[a-zA-Z0-9_\-!@#$%^&*()+=\[\]{}|;:'\",.<>/\\? \t\n\x0b\f\r]*$")
# hawkbit-core/.../HawkbitSecurityProperties.java maxAttributeEntriesPerTarget, maxMessagesPerActionStatus,
# maxStatusEntriesPerAction
MAX_ATTRIBUTES = 100
MAX_MESSAGES_PER_STATUS = 50
MAX_STATUS_ENTRIES = 1000
OPEN = ("RUNNING", "CANCELING", "WAIT_FOR_CONFIRMATION")
FEEDBACK_EXECUTIONS = ("closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded",
                       "download")  # MODEL DdiStatus.ExecutionStatus
FEEDBACK_RESULTS = ("success", "failure", "none")  # MODEL DdiResult.FinalResult


class State:
    def __init__(self, tenant, sleep):
        self.tenant = tenant
        self.config = {
            "sleep": sleep,
            "mtls": True,
            "trusted_issuer_hashes": [],
            "gateway_token": None,
            "link_base": None,
            "link_rels": ["download-http", "md5sum-http"],
            "artifact_base": None,
            "artifact_redirect": None,
            "skip_artifact_access_check": False,
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
            # A new target is asked for its attributes (Target.requestControllerAttributes defaults to true).
            t = {"id": cid, "token": None, "attributes": {}, "config_requested": True, "polls": 0,
                 "last_poll": None, "config_puts": 0, "config_modes": []}
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


def legacy_type(body):
    """The older control form, read as the hawkBit action it stands for."""
    if body.get("type"):
        return body["type"]
    if body.get("update") == "skip" and not body.get("maintenanceWindow"):
        return "downloadonly"
    if body.get("download") == "attempt" or body.get("update") == "attempt":
        return "soft"
    return "forced"


def handling(action):
    """CTRL calculateDownloadType / calculateUpdateType / calculateMaintenanceWindow."""
    kind = action["type"]
    download = "forced" if kind in ("downloadonly", "forced", "timeforced") else "attempt"
    window = None
    if action.get("maintenance") is not None:
        window = "available" if action["maintenance"].get("available") else "unavailable"
    if kind == "downloadonly":
        update = "skip"
    elif window is not None:
        update = download if window == "available" else "skip"
    else:
        update = download
    # Not hawkBit's resolver (it never sends skip), but the DDI model allows it.
    if action.get("download_override"):
        download = action["download_override"]
    return download, update, window


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ddi-test-server/2"

    def log_message(self, fmt, *args):  # quiet; the request log is in /admin/state
        if os.environ.get("DDI_SERVER_VERBOSE"):
            sys.stderr.write("ddi: " + fmt % args + "\n")

    # --- plumbing -------------------------------------------------------------
    def record(self, status):
        with LOCK:
            STATE.requests.append({"method": self.command, "path": self.path, "status": status,
                                   "time": time.time(), "cn": self.headers.get("X-Ssl-Client-Cn", ""),
                                   "auth": (self.headers.get("Authorization") or "").split(" ")[0],
                                   "if_none_match": self.headers.get("If-None-Match", "")})

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

    def empty(self, status):
        # hawkBit's ResponseEntity without a body (401, 404 of ResponseEntity.notFound(), 410).
        self.send_bytes(status, b"", "application/json")

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            return None
        return self.rfile.read(n) if n else b""

    def request_base(self):
        # The request's scheme, host and port: with the reverse proxy's forward headers
        # (server.forward-headers-strategy=NATIVE in hawkBit's nginx example).
        proto = self.headers.get("X-Forwarded-Proto", "http")
        host = self.headers.get("Host", "localhost")
        return "%s://%s" % (proto, host)

    def link(self, rel_path):
        base = STATE.config.get("link_base") or self.request_base()
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
        tenant, cid, rest, query = m.group(1), m.group(2), m.group(3) or "", m.group(4) or ""
        params = parse_qs(query.lstrip("?"))
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
        if len(cid) > 256:  # API: controllerId longer than 256 -> 400
            self.read_body()
            return self.error(400, "controllerId too long")
        if not self.authenticated(cid):
            self.read_body()
            return self.empty(401)
        base = "/%s/controller/v1/%s" % (tenant, cid)
        if rest in ("", "/"):
            if method not in ("GET", "HEAD"):
                return self.error(405, "method not allowed")
            with LOCK:
                target = STATE.target(cid)  # CTRL getControllerBase registers an unknown target
            return self.poll(target, base)
        with LOCK:
            target = STATE.targets.get(cid)
        if target is None:  # CTRL findTargetOrThrow
            self.read_body()
            return self.error(404, "target %s not found" % cid)
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
                        return self.empty(404)
                    return self.send_json(200, {"id": action["id"], "cancelAction": {"stopId": action["id"]}})
                if parts[0] == "confirmationBase" and action["status"] != "WAIT_FOR_CONFIRMATION":
                    return self.empty(404)
                if parts[0] == "deploymentBase" and action["status"] not in ("RUNNING",):
                    # CTRL getControllerDeploymentBaseAction: cancelling, cancelled or waiting for
                    # confirmation -> 404; a closed action is still served (its status is in actionHistory).
                    if action["status"] in ("CANCELING", "CANCELED", "WAIT_FOR_CONFIRMATION"):
                        return self.empty(404)
                if parts[0] == "installedBase" and action["status"] in OPEN + ("CANCELED",):
                    return self.empty(404)
                history = params.get("actionHistory", ["0"])[0]
                try:
                    history = int(history)
                except ValueError:
                    return self.error(400, "actionHistory must be an integer")
                return self.deployment(action, base, parts[0], history)
            if len(parts) == 3 and parts[2] == "feedback":
                if method != "POST":
                    return self.error(405, "method not allowed")
                if parts[0] == "confirmationBase":
                    return self.confirmation_feedback(action)
                if parts[0] == "deploymentBase":
                    return self.feedback(action, target)
                if parts[0] == "cancelAction":
                    return self.cancel_feedback(action)
        if parts[0] == "softwaremodules" and len(parts) == 4 and parts[2] == "artifacts":
            if method not in ("GET", "HEAD"):
                return self.error(405, "method not allowed")
            return self.artifact(cid, parts[1], parts[3])
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
        # JCM findActiveActionWithHighestWeight: the oldest open action (no weights here).
        for a in sorted(STATE.actions.values(), key=lambda x: int(x["id"])):
            if a["target"] == cid and a["status"] in OPEN:
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
                                   STATE.faults.get("poll_content_type", "application/hal+json;charset=UTF-8"))
        links = {}
        with LOCK:
            # DCH fromTarget: at most one of confirmationBase / cancelAction / deploymentBase.
            a = self.open_action(target["id"])
            if a is not None and a["status"] == "WAIT_FOR_CONFIRMATION":
                links["confirmationBase"] = self.link("%s/confirmationBase/%s?c=%s" % (base, a["id"],
                                                                                   self.action_hash(a)))
            elif a is not None and a["status"] == "CANCELING":
                links["cancelAction"] = self.link("%s/cancelAction/%s" % (base, a["id"]))
            elif a is not None:
                links["deploymentBase"] = self.link("%s/deploymentBase/%s?c=%s" % (base, a["id"], self.action_hash(a)))
            # JCM findInstalledActionByTarget: the last finished (not download-only) action.
            finished = [x for x in STATE.actions.values()
                        if x["target"] == target["id"] and x["status"] == "FINISHED"]
            if finished:
                last = max(finished, key=lambda x: int(x["id"]))
                links["installedBase"] = self.link("%s/installedBase/%s" % (base, last["id"]))
            if target["config_requested"]:
                links["configData"] = self.link("%s/configData" % base)
            body = {"config": {"polling": {"sleep": STATE.config["sleep"]}}}
            if links:
                body["_links"] = links
        data = json.dumps(body).encode()
        # Spring's ShallowEtagHeaderFilter covers every non-download response (hawkBit's
        # ExcludePathAwareShallowETagFilter leaves out the artifact downloads). Its
        # generateETagHeaderValue (spring-framework, spring-web
        # org/springframework/web/filter/ShallowEtagHeaderFilter.java) writes a 0 and the
        # body's MD5 in hex inside the quotes; "W/" only with setWriteWeakETag, which
        # hawkBit does not set.
        etag = '"0%s"' % hashlib.md5(data).hexdigest()
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
        # DCH calculateEtag: changes when the action changes (forced, window opens, ...).
        download, update, window = handling(a)
        key = "%s/%s/%s/%s/%s" % (a["id"], a["type"], download, update, window)
        return str(int(hashlib.sha1(key.encode()).hexdigest()[:7], 16) - (1 << 27))

    def artifact_links(self, base, art, name):
        cfg = STATE.config
        href = "%s/softwaremodules/%s/artifacts/%s" % (base, art["smid"], name)
        links = {}
        if cfg.get("artifact_base"):
            # External storage (hawkbit.artifact.url.protocols.<rel>.ref pointing elsewhere).
            ext = {"href": "%s/%s" % (cfg["artifact_base"].rstrip("/"), name)}
            for rel in cfg.get("link_rels") or []:
                links[rel] = ext if rel.startswith("download") else {"href": ext["href"] + ".MD5SUM"}
            return links
        for rel in cfg.get("link_rels") or []:
            links[rel] = self.link(href + (".MD5SUM" if rel.startswith("md5sum") else ""))
        return links

    def deployment(self, action, base, kind, history):
        raw = STATE.faults.get("deployment_body")
        if raw is not None and kind == "deploymentBase":
            return self.send_bytes(200, raw.encode(),
                                   STATE.faults.get("deployment_content_type", "application/hal+json;charset=UTF-8"))
        chunks = []
        with LOCK:
            for c in action["chunks"]:
                arts = []
                for name in c.get("artifacts", []):
                    art = STATE.artifacts[name]
                    size = art["size"] + (1 if STATE.faults.get("wrong_size") else 0)
                    arts.append({"filename": name,
                                 "hashes": {"sha1": art["sha1"], "md5": art["md5"], "sha256": art["sha256"]},
                                 "size": size, "_links": self.artifact_links(base, art, name)})
                part = c.get("part", "os")
                part = {"application": "bApp", "runtime": "jvm"}.get(part, part)  # DCH mapChunkLegacyKeys
                chunk = {"part": part, "version": c.get("version", "1"), "name": c.get("name", "chunk"),
                         "artifacts": arts}
                if c.get("encrypted"):
                    chunk["encrypted"] = True
                if c.get("metadata"):
                    chunk["metadata"] = c["metadata"]
                chunks.append(chunk)
            download, update, window = handling(action)
            dep = {"download": download, "update": update, "chunks": chunks}
            if window is not None:
                dep["maintenanceWindow"] = window
            body = {"id": action["id"], ("confirmation" if kind == "confirmationBase" else "deployment"): dep}
            if history != 0:
                limit = MAX_ACTION_HISTORY if history < 0 or history >= MAX_ACTION_HISTORY else history
                messages = [m for f in reversed(action["feedback"]) for m in reversed(f.get("details") or [])]
                if messages:
                    body["actionHistory"] = {"status": action["status"], "messages": messages[:limit]}
            if kind == "deploymentBase":
                action["status_history"].append({"status": "RETRIEVED", "time": time.time()})
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

    def parse_feedback(self):
        """MODEL DdiActionFeedback / DdiStatus / DdiResult: status, execution, result and
        finished are required (400 otherwise); unknown fields are ignored."""
        raw = self.read_body()
        if raw is None:
            return None, self.error(413, "body too large")
        try:
            fb = json.loads(raw)
            status = fb["status"]
            execution = status["execution"]
            finished = status["result"]["finished"]
        except (ValueError, KeyError, TypeError):
            return None, self.error(400, "malformed feedback")
        if execution not in FEEDBACK_EXECUTIONS or finished not in FEEDBACK_RESULTS:
            return None, self.error(400, "invalid execution or result")
        details = status.get("details") or []
        if not isinstance(details, list) or not all(isinstance(d, str) for d in details):
            return None, self.error(400, "details must be a list of strings")
        if len(details) > MAX_MESSAGES_PER_STATUS:
            return None, self.error(429, "more than %d details in one status" % MAX_MESSAGES_PER_STATUS)
        return {"execution": execution, "finished": finished, "progress": status["result"].get("progress"),
                "details": details, "code": status.get("code"), "timestamp": fb.get("timestamp")}, None

    def feedback(self, action, target):
        fb, err = self.parse_feedback()
        if fb is None:
            return err
        with LOCK:
            if action["status"] == "WAIT_FOR_CONFIRMATION":
                return self.empty(404)
            if action["status"] not in OPEN:  # CTRL postDeploymentBaseActionFeedback: !isActive -> 410
                return self.empty(410)
            execution, finished = fb["execution"], fb["finished"]
            intermediate = not (execution == "closed")
            if intermediate and len(action["feedback"]) >= MAX_STATUS_ENTRIES:
                return self.error(429, "more than %d status entries for the action" % MAX_STATUS_ENTRIES)
            fb.update({"kind": "deploymentBase", "time": time.time()})
            action["feedback"].append(fb)
            if execution == "closed":
                action["status"] = "ERROR" if finished == "failure" else "FINISHED"
                if action["status"] == "FINISHED":
                    target["config_requested"] = True  # JCM requestControllerAttributes
            elif execution == "downloaded":
                if action["type"] == "downloadonly":
                    action["status"] = "DOWNLOADED"  # JCM handleDownloadedActionStatus closes it
                    target["config_requested"] = True
            # canceled: a CANCELED status entry, the action stays open (CTRL generateUpdateStatus).
        self.send_bytes(200, b"", "application/json")

    def cancel_feedback(self, action):
        fb, err = self.parse_feedback()
        if fb is None:
            return err
        with LOCK:
            if action["status"] not in ("CANCELING", "CANCELED"):  # JCM addCancelActionStatus
                return self.error(405, "action %s is not in canceling state" % action["id"])
            fb.update({"kind": "cancelAction", "time": time.time()})
            action["feedback"].append(fb)
            execution, finished = fb["execution"], fb["finished"]
            if execution == "closed" and finished != "failure":
                action["status"] = "CANCELED"
            elif execution == "rejected" or (execution == "closed" and finished == "failure"):
                action["status"] = "RUNNING"
                action["cancel_rejected"] = True
            # canceled: a WARNING "not supported"; anything else: an intermediate entry.
        self.send_bytes(200, b"", "application/json")

    def config_data(self, target):
        raw = self.read_body()
        if raw is None:
            return self.error(413, "body too large")
        try:
            body = json.loads(raw)
            data = body.get("data")
            mode = body.get("mode") or "merge"
            if not isinstance(data, dict) or not data or mode not in ("merge", "replace", "remove"):
                raise ValueError
            if not all(isinstance(v, str) or v is None for v in data.values()):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            return self.error(400, "malformed configData")
        for k, v in data.items():
            if len(k) > MAX_ATTRIBUTE_LENGTH or not ATTRIBUTE_PATTERN.match(k) or \
                    (v is not None and (len(v) > MAX_ATTRIBUTE_LENGTH or not ATTRIBUTE_PATTERN.match(v))):
                return self.error(400, "invalid target attribute %r" % k[:40])
        with LOCK:
            current = target["attributes"]
            if mode == "remove":
                result = {k: v for k, v in current.items() if k not in data}
            else:
                result = {} if mode == "replace" else dict(current)
                for k, v in data.items():
                    if v is None:
                        result.pop(k, None)
                    else:
                        result[k] = v
            if len(result) > len(current) and len(result) > MAX_ATTRIBUTES:
                return self.error(429, "quota exceeded: more than %d attributes" % MAX_ATTRIBUTES)
            target["attributes"] = result
            target["config_requested"] = False
            target["config_puts"] += 1
            target["config_modes"].append(mode)
        self.send_bytes(200, b"", "application/json")

    def artifact(self, cid, smid, filename):
        md5sum = filename.endswith(".MD5SUM")
        if md5sum:
            filename = filename[: -len(".MD5SUM")]
        art = STATE.artifacts.get(filename)
        if art is None or str(art["smid"]) != smid:
            return self.empty(404)
        with LOCK:
            if not STATE.config.get("skip_artifact_access_check"):
                holder = [a for a in STATE.actions.values()
                          if a["target"] == cid and a["status"] in ("RUNNING",)
                          and any(filename in c.get("artifacts", []) for c in a["chunks"])]
                if not holder:
                    return self.empty(404)  # SoftwareModuleNotAssignedToTargetException
            status_fault = STATE.faults.get("artifact_status")
            redirect = STATE.config.get("artifact_redirect")
            loop = STATE.faults.get("artifact_redirect_loop")
        if status_fault:
            return self.error(status_fault, "fault injected")
        if loop:
            return self.send_bytes(302, b"", extra={"Location": self.path})
        if md5sum:
            return self.send_bytes(200, ("%s  %s" % (art["md5"], filename)).encode(), "text/plain")
        if redirect and self.command == "GET":
            return self.send_bytes(302, b"", extra={"Location": "%s/%s" % (redirect.rstrip("/"), filename)})
        size = art["size"]
        etag = '"%s"' % art["sha1"]  # FileStreamingUtil: ETag is the sha1
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
        if status == 200:
            with LOCK:  # CTRL logDownload: a plain GET logs a DOWNLOAD status; Range GETs do not
                for a in STATE.actions.values():
                    if a["target"] == cid and a["status"] in OPEN:
                        a["status_history"].append({"status": "DOWNLOAD", "time": time.time()})
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
                smid = body.get("module") or STATE.next_sm
                if not body.get("module"):
                    STATE.next_sm += 1
                STATE.artifacts[body["name"]] = {"path": p, "size": size, "sha256": s256, "sha1": s1, "md5": m5,
                                                 "smid": smid}
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
                kind = legacy_type(body)
                if kind not in ("soft", "forced", "timeforced", "downloadonly"):
                    return self.send_json(400, {"message": "type must be soft, forced, timeforced or downloadonly"})
                maintenance = body.get("maintenance")
                if maintenance is None and body.get("maintenanceWindow"):
                    maintenance = {"available": body["maintenanceWindow"] == "available"}
                if maintenance is not None and kind == "downloadonly":
                    # hawkBit refuses a maintenance window on a download-only assignment
                    return self.send_json(400, {"message": "a download-only action has no maintenance window"})
                aid = str(STATE.next_action)
                STATE.next_action += 1
                first = "WAIT_FOR_CONFIRMATION" if STATE.config.get("confirmation_required") else "RUNNING"
                STATE.actions[aid] = {"id": aid, "target": tid, "status": first, "type": kind,
                                      "download_only": kind == "downloadonly",
                                      "maintenance": maintenance,
                                      "download_override": body.get("download_override"),
                                      "chunks": body.get("chunks", []), "feedback": [], "status_history": []}
                return self.send_json(200, {"id": aid})
            m = re.match(r"^/admin/actions/([^/]+)$", path)
            if m:
                a = STATE.actions.get(m.group(1))
                if a is None:
                    return self.send_json(404, {"message": "no action"})
                if body.get("cancel"):
                    if a["status"] not in ("RUNNING", "WAIT_FOR_CONFIRMATION"):
                        return self.send_json(409, {"message": "action is " + a["status"]})
                    a["status"] = "CANCELING"
                if "maintenanceWindow" in body:
                    mw = body["maintenanceWindow"]
                    a["maintenance"] = None if mw is None else {"available": mw == "available"}
                if "type" in body:
                    a["type"] = body["type"]
                    a["download_only"] = body["type"] == "downloadonly"
                if "download" in body:
                    a["download_override"] = body["download"]
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
    srv.request_queue_size = 1024
    print("listening %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


ARGS = None
if __name__ == "__main__":
    main()
