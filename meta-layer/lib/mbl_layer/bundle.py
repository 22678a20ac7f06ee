# SPDX-License-Identifier: Apache-2.0
"""How classes/mbl-bundle.bbclass runs mbl-bundle (services/mbl-bundle), kept
out of the class so that the project's tests run exactly these steps against
the real tool and the real update service.

Two ways to sign:
- a key file: `mbl-bundle create --key KEY --cert CERT [--chain PEM] ... -o OUT`;
- a key held elsewhere (HSM, PKCS#11 token, signing server): `mbl-bundle create
  ... --manifest-out manifest.json`, then the signing command, which must write
  a detached DER CMS signature of the manifest (carrying the signer's
  certificate, and the intermediates the device needs), then `mbl-bundle
  assemble --manifest ... --signature ... -o OUT` with the same payloads.
  The command runs through /bin/sh with MBL_MANIFEST and MBL_SIGNATURE in its
  environment, e.g. with OpenSSL 3 and a PKCS#11 provider:
      openssl cms -sign -binary -nosmimecap -outform DER \\
          -in "$MBL_MANIFEST" -out "$MBL_SIGNATURE" \\
          -signer /secure/mbl-signer.crt -certfile /secure/ca-int.crt \\
          -provider pkcs11 -provider default -inkey "pkcs11:token=mbl;object=signer"
"""

import os
import subprocess


class BundleError(RuntimeError):
    pass


def payload_args(rootfs=None, apps=(), config=None, files=(), slot_class=None):
    """The payload flags shared by `create` and `assemble`."""
    args = []
    if rootfs:
        args += ["--rootfs", rootfs]
        if slot_class:
            args += ["--slot-class", slot_class]
    for app in apps:
        name, sep, path = app.partition("=")
        if not sep or not name or not path or name.startswith("@"):
            raise BundleError('app "%s" is not NAME[@VERSION]=OCI-ARCHIVE' % app)
        args += ["--app", app]
    if config:
        args += ["--config", config]
    for f in files:
        if "=" not in f:
            raise BundleError('file "%s" is not NAME=PATH' % f)
        args += ["--file", f]
    if not args:
        raise BundleError("a bundle needs at least one payload (rootfs, app, config or file)")
    return args


def steps(tool, out, version, security_version, compatible, payloads, key=None, cert=None, chain=None,
          sign_cmd=None, workdir=None):
    """[(kind, argv or shell command)] that make the signed bundle `out`:
    kind "run" (argv) or "sign" (a shell command with MBL_MANIFEST and
    MBL_SIGNATURE set to the returned paths in its environment)."""
    if not version:
        raise BundleError("no bundle version")
    if not str(security_version).isdigit():
        raise BundleError('security version "%s" is not a non-negative integer' % security_version)
    if not compatible:
        raise BundleError("no compatible device class")
    meta = ["--version", version, "--security-version", str(security_version), "--compatible", compatible]
    if sign_cmd:
        if not workdir:
            raise BundleError("external signing needs a work folder")
        manifest = os.path.join(workdir, "manifest.json")
        signature = os.path.join(workdir, "manifest.json.sig")
        return [
            ("run", [tool, "create"] + meta + payloads + ["--manifest-out", manifest]),
            ("sign", sign_cmd, manifest, signature),
            ("run", [tool, "assemble", "--manifest", manifest, "--signature", signature] + payloads + ["-o", out]),
        ]
    if not key or not cert:
        raise BundleError("signing needs a key and its certificate (or an external signing command)")
    sign = ["--key", key, "--cert", cert] + (["--chain", chain] if chain else [])
    return [("run", [tool, "create"] + sign + meta + payloads + ["-o", out])]


def make(tool, out, version, security_version, compatible, payloads, key=None, cert=None, chain=None,
         sign_cmd=None, workdir=None, log=None):
    """Runs steps(); BundleError with the failing step's output."""
    for step in steps(tool, out, version, security_version, compatible, payloads, key, cert, chain, sign_cmd,
                      workdir):
        if step[0] == "run":
            argv = step[1]
            if log:
                log("running " + " ".join(argv))
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                raise BundleError("mbl-bundle %s failed (exit %d):\n%s" % (argv[1], r.returncode, r.stdout))
        else:
            _, cmd, manifest, signature = step
            if os.path.exists(signature):
                os.unlink(signature)
            env = dict(os.environ, MBL_MANIFEST=manifest, MBL_SIGNATURE=signature)
            if log:
                log("signing the manifest with MBL_BUNDLE_SIGN_CMD")
            r = subprocess.run(["/bin/sh", "-c", cmd], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                raise BundleError("the signing command failed (exit %d):\n%s" % (r.returncode, r.stdout))
            if not os.path.isfile(signature) or os.path.getsize(signature) == 0:
                raise BundleError("the signing command wrote no signature to $MBL_SIGNATURE")
    if not os.path.isfile(out):
        raise BundleError("mbl-bundle reported success but wrote no %s" % out)
    return out
