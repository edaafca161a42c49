"""Certificates and keys for the local control plane, made with the openssl CLI (no Python crypto dependency).

ECDSA P-256 everywhere: key generation is milliseconds (RSA-2048 is ~0.1-1 s each on a loaded 2-core box) and
every component accepts it (the service-account tokens are then ES256). One CA signs the API server's serving
certificate and every client certificate; the client identities are what RBAC and the audit log see.
"""

from __future__ import annotations

import pathlib
import subprocess
import tempfile

# name -> (CommonName, Organization or ""): the users the components authenticate as.
CLIENTS = {
    "admin": ("kubernetes-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    # kwok plays the kubelet of every fake node; the Node authorizer would pin a kubelet to one node, so kwok
    # runs with cluster-admin rights like kwokctl's own setup does.
    "kwok": ("kwok-controller", "system:masters"),
    # The real node (tools/cluster/realnode.py): its kubelet as the Node authorizer expects it, kube-proxy as the
    # bootstrap RBAC knows it, and the API server's client for kubelet calls (logs, exec).
    "kubelet": ("system:node:asr-node-0", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}
# 10.99.0.1: the real node's address (its pod bridge), where the API server listens when that node runs.
SERVING_SANS = (
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1,"
    "IP:10.99.0.1"
)
KUBELET_SANS = "DNS:asr-node-0,IP:10.99.0.1"
DAYS = "3650"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ec_key(path: pathlib.Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def _signed_cert(pki: pathlib.Path, name: str, subject: str, extensions: str) -> None:
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    _ec_key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    with tempfile.NamedTemporaryFile("w", suffix=".ext", delete=False) as ext:
        ext.write(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", ext.name, "-out", str(crt),
    )  # fmt: skip
    pathlib.Path(ext.name).unlink()
    csr.unlink()


def _server_ext(sans: str) -> str:
    return f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"


def ensure_pki(pki: pathlib.Path) -> pathlib.Path:
    """Create the CA, serving certs, client certs and service-account key pair once; reuse them afterwards (a
    certificate added to this file later is made on the next start, signed by the same CA)."""
    done = pki / f"done-{len(CLIENTS)}-{SERVING_SANS.count(',')}"
    if done.exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _ec_key(pki / "ca.key")
        _openssl(
            "req", "-x509", "-new", "-key", str(pki / "ca.key"), "-subj", "/CN=asr-platform-local-ca", "-days", DAYS,
            "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(pki / "ca.crt"),
        )  # fmt: skip
    servers = {"apiserver": ("/CN=kube-apiserver", SERVING_SANS), "kubelet-serving": ("/CN=asr-node-0", KUBELET_SANS)}
    for name, (subject, sans) in servers.items():
        made_for = pki / f"{name}.sans"  # re-issued when the names it must carry change
        if not (pki / f"{name}.crt").exists() or not made_for.exists() or made_for.read_text() != sans:
            _signed_cert(pki, name, subject, _server_ext(sans))
            made_for.write_text(sans)
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
    for name, (cn, org) in CLIENTS.items():
        if not (pki / f"{name}.crt").exists():
            _signed_cert(pki, name, f"/CN={cn}" + (f"/O={org}" if org else ""), client_ext)
    if not (pki / "sa.key").exists():
        _ec_key(pki / "sa.key")
        _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    done.write_text("ok\n")
    return pki
