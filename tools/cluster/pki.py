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
}
SERVING_SANS = (
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1"
)
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


def ensure_pki(pki: pathlib.Path) -> pathlib.Path:
    """Create the CA, serving cert, client certs and service-account key pair once; reuse them afterwards."""
    if (pki / "done").exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)
    _ec_key(pki / "ca.key")
    _openssl(
        "req", "-x509", "-new", "-key", str(pki / "ca.key"), "-subj", "/CN=asr-platform-local-ca", "-days", DAYS,
        "-sha256", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", str(pki / "ca.crt"),
    )  # fmt: skip
    server_ext = f"subjectAltName={SERVING_SANS}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
    _signed_cert(pki, "apiserver", "/CN=kube-apiserver", server_ext)
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
    for name, (cn, org) in CLIENTS.items():
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        _signed_cert(pki, name, subject, client_ext)
    _ec_key(pki / "sa.key")
    _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "done").write_text("ok\n")
    return pki
