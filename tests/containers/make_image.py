#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Builds OCI image layout archives and runtime bundle archives for the
container-manager tests, including hostile ones (the manager must refuse them).

Usage: make_image.py SPEC.json OUT.tar

SPEC: {
  "kind": "image" | "bundle",
  "layers": [ [entry, ...], ... ],       # image: one list per layer; bundle: one list (under rootfs/)
  "compression": ["gzip" | "zstd" | "none", ...] per layer (default gzip),
  "config": {"Cmd": [...], "Env": [...], "User": "..."},
  "ref": "v1",                           # org.opencontainers.image.ref.name
  "version": "1.0",                      # org.opencontainers.image.version annotation
  "corrupt_layer": 0,                    # flip a byte of layer N after hashing
  "omit_layer": 0,                       # leave layer N's blob out
  "layer_media_type": "...",             # override every layer's mediaType
  "manifests": 2,                        # repeat the manifest descriptor N times (different refs)
  "no_manifest": true,                   # index.json with an empty manifests list
  "truncate": 1000,                      # cut the final archive to N bytes
  "host_files": {"bin/busybox": "/bin/busybox"}, # (bundle/image) copy host files into the first layer
  "process": {"cwd": 5}                  # bundle: members merged into config.json's "process" as they are
}
entry: {"name": "a/b", "type": "file"|"dir"|"symlink"|"hardlink"|"chardev"|"fifo",
        "data": "text", "size": N (zeros), "target": "...", "mode": 493}
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile


def add_entry(tf, e):
    name = e["name"]
    t = e.get("type", "file")
    ti = tarfile.TarInfo(name)
    ti.mode = e.get("mode", 0o755 if t == "dir" else 0o644)
    ti.uid = e.get("uid", 0)
    ti.gid = e.get("gid", 0)
    ti.mtime = 1700000000
    if t == "dir":
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
    elif t == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e["target"]
        tf.addfile(ti)
    elif t == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = e["target"]
        tf.addfile(ti)
    elif t == "chardev":
        ti.type = tarfile.CHRTYPE
        ti.devmajor = 1
        ti.devminor = 3
        tf.addfile(ti)
    elif t == "fifo":
        ti.type = tarfile.FIFOTYPE
        tf.addfile(ti)
    elif t == "hostfile":
        data = open(e["source"], "rb").read()
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        if "size" in e:
            data = b"\0" * e["size"]
        else:
            data = e.get("data", "").encode()
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            add_entry(tf, e)
    return buf.getvalue()


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return data


MEDIA = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


def sha(data):
    return hashlib.sha256(data).hexdigest()


def build_image(spec):
    blobs = {}  # hex -> bytes
    descs = []
    layers = spec.get("layers", [])
    comps = spec.get("compression", ["gzip"] * len(layers))
    diff_ids = []
    for i, entries in enumerate(layers):
        raw = tar_bytes(entries)
        diff_ids.append("sha256:" + sha(raw))
        data = compress(raw, comps[i])
        h = sha(data)
        if spec.get("corrupt_layer") == i:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        if spec.get("omit_layer") != i:
            blobs[h] = data
        descs.append({
            "mediaType": spec.get("layer_media_type", MEDIA[comps[i]]),
            "digest": "sha256:" + h,
            "size": len(data),
        })
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": spec.get("config", {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdata = json.dumps(config).encode()
    blobs[sha(cdata)] = cdata
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + sha(cdata),
                   "size": len(cdata)},
        "layers": descs,
    }
    if "version" in spec:
        manifest["annotations"] = {"org.opencontainers.image.version": spec["version"]}
    mdata = json.dumps(manifest).encode()
    blobs[sha(mdata)] = mdata
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(mdata),
             "size": len(mdata)}
    manifests = []
    for n in range(spec.get("manifests", 1)):
        d = dict(mdesc)
        ref = spec.get("ref", "latest") if n == 0 else "other%d" % n
        d["annotations"] = {"org.opencontainers.image.ref.name": ref}
        manifests.append(d)
    if spec.get("no_manifest"):
        manifests = []
    index = {"schemaVersion": 2, "manifests": manifests}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def put(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
        put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        put("index.json", json.dumps(index).encode())
        for h, data in blobs.items():
            put("blobs/sha256/" + h, data)
    return out.getvalue()


def build_bundle(spec):
    cfg = {"ociVersion": "1.0.2", "process": {"args": spec.get("config", {}).get("Cmd", ["/bin/true"]),
                                              "env": spec.get("config", {}).get("Env", []), "cwd": "/",
                                              "terminal": True}, "root": {"path": "rootfs"}}
    cfg["process"].update(spec.get("process", {}))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = json.dumps(cfg).encode()
        ti = tarfile.TarInfo("config.json")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        for e in spec.get("layers", [[]])[0]:
            e = dict(e)
            if not e["name"].startswith("/"):
                e["name"] = "rootfs/" + e["name"]
            add_entry(tf, e)
    return out.getvalue()


def main():
    spec = json.load(open(sys.argv[1]))
    data = build_bundle(spec) if spec.get("kind") == "bundle" else build_image(spec)
    if "truncate" in spec:
        data = data[: spec["truncate"]]
    with open(sys.argv[2], "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
