"""Certificates and keys for the local control plane, made with the openssl CLI (no Python crypto dependency).

ECDSA P-256 everywhere: key generation is milliseconds (RSA-2048 is ~0.1-1 s each on a loaded 2-core box) and
every component accepts it (the service-account tokens are then ES256). One CA signs the API server's serving
certificate and every client certificate; the client identities are what RBAC and the audit log see.
"""

from __future__ import annotations

import pathlib
import subprocess
import tempfile

# name -> (CommonName, Organizations separated by "/" or ""): the users the components authenticate as.
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
    # The autoscaling components (autoscalers.py) run outside the cluster but as the ServiceAccounts their upstream
    # RBAC manifests bind (a ServiceAccount subject matches the user name "system:serviceaccount:<ns>:<name>").
    "keda": ("system:serviceaccount:keda:keda-operator", "system:serviceaccounts/system:serviceaccounts:keda"),
    "prometheus-adapter": (
        "system:serviceaccount:monitoring:prometheus-adapter",
        "system:serviceaccounts/system:serviceaccounts:monitoring",
    ),
    "prometheus": (
        "system:serviceaccount:monitoring:prometheus",
        "system:serviceaccounts/system:serviceaccounts:monitoring",
    ),
    # KEDA's HTTP add-on (http_addon.py), as its kustomization names the ServiceAccounts.
    "keda-http-interceptor": (
        "system:serviceaccount:keda:keda-add-ons-http-interceptor",
        "system:serviceaccounts/system:serviceaccounts:keda",
    ),
    "keda-http-scaler": (
        "system:serviceaccount:keda:keda-add-ons-http-scaler",
        "system:serviceaccounts/system:serviceaccounts:keda",
    ),
}
# The aggregation layer: the API server proxies to extension API servers (KEDA's and prometheus-adapter's metrics
# APIs) with this client certificate, signed by its own CA (front-proxy-ca) so that no ordinary client certificate
# can pass as the proxy and assert any user in its headers.
FRONT_PROXY_CLIENT = "front-proxy-client"
# 10.99.0.1: the real node's address (its pod bridge), where the API server listens when that node runs.
SERVING_SANS = (
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1,"
    "IP:10.99.0.1"
)
KUBELET_SANS = "DNS:asr-node-0,IP:10.99.0.1"
# The autoscaling components' one serving certificate (KEDA's operator also presents it as a gRPC client to its
# metrics server, mutual TLS): their addresses on the node and the Service names their upstream manifests use.
AUTOSCALER_SANS = (
    "DNS:localhost,IP:127.0.0.1,IP:10.99.0.1,DNS:keda-operator.keda.svc.cluster.local,"
    "DNS:keda-metrics-apiserver.keda.svc,DNS:keda-admission-webhooks.keda.svc,DNS:prometheus-adapter.monitoring.svc"
)
DAYS = "3650"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ec_key(path: pathlib.Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def _signed_cert(pki: pathlib.Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    _ec_key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    with tempfile.NamedTemporaryFile("w", suffix=".ext", delete=False) as ext:
        ext.write(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki / f"{ca}.crt"), "-CAkey", str(pki / f"{ca}.key"),
        "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", ext.name, "-out", str(crt),
    )  # fmt: skip
    pathlib.Path(ext.name).unlink()
    csr.unlink()


def _server_ext(sans: str, usage: str = "serverAuth") -> str:
    return f"subjectAltName={sans}\nextendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n"


def _ca(pki: pathlib.Path, name: str, common_name: str) -> None:
    if not (pki / f"{name}.crt").exists():
        _ec_key(pki / f"{name}.key")
        _openssl(
            "req", "-x509", "-new", "-key", str(pki / f"{name}.key"), "-subj", f"/CN={common_name}", "-days", DAYS,
            "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(pki / f"{name}.crt"),
        )  # fmt: skip


def ensure_pki(pki: pathlib.Path) -> pathlib.Path:
    """Create the CAs, serving certs, client certs and service-account key pair once; reuse them afterwards (a
    certificate added to this file later is made on the next start, signed by the same CA)."""
    done = pki / f"done-{len(CLIENTS)}-{SERVING_SANS.count(',')}-{AUTOSCALER_SANS.count(',')}"
    if done.exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)
    _ca(pki, "ca", "asr-platform-local-ca")
    _ca(pki, "front-proxy-ca", "asr-platform-local-front-proxy-ca")
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
    servers = {
        "apiserver": ("/CN=kube-apiserver", _server_ext(SERVING_SANS)),
        "kubelet-serving": ("/CN=asr-node-0", _server_ext(KUBELET_SANS)),
        "autoscalers": ("/CN=asr-autoscalers", _server_ext(AUTOSCALER_SANS, "serverAuth,clientAuth")),
    }
    for name, (subject, ext) in servers.items():
        made_for = pki / f"{name}.ext"  # re-issued when the names it must carry change
        if not (pki / f"{name}.crt").exists() or not made_for.exists() or made_for.read_text() != ext:
            _signed_cert(pki, name, subject, ext)
            made_for.write_text(ext)
    for name, (cn, orgs) in CLIENTS.items():
        if not (pki / f"{name}.crt").exists():
            _signed_cert(pki, name, f"/CN={cn}" + "".join(f"/O={o}" for o in orgs.split("/") if o), client_ext)
    if not (pki / f"{FRONT_PROXY_CLIENT}.crt").exists():
        _signed_cert(pki, FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}", client_ext, ca="front-proxy-ca")
    if not (pki / "sa.key").exists():
        _ec_key(pki / "sa.key")
        _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    done.write_text("ok\n")
    return pki
