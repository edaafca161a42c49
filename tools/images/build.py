#!/usr/bin/env python3
"""`make images`: build the inference (cpu target) and operator images with buildah — no daemon — cached by content.

    python3 tools/images/build.py            build what is missing; print each image's tag, size and build time
    python3 tools/images/build.py --tags     print the tags the current sources would have (builds nothing)

Each image is tagged `localhost/<name>:<tag>-<key>`, where the key hashes everything the build reads: the
Dockerfile, the files its COPY instructions take from the repository, the build args and the base image's ID. An
image whose key already exists is not rebuilt, so a second run is a no-op; `localhost/<name>:<tag>` follows the
newest build. Tests ask `--tags` for the current key, so a stale image never passes for the sources under test.

What cannot be reached here comes from build args (the Dockerfiles' defaults stay the official ones):
  BASE_IMAGE       default: a Debian bookworm base made with mmdebstrap (Debian's python3 is 3.11), imported as
                   localhost/asr-base; set BASE_IMAGE=python:3.11-slim-bookworm where Docker Hub is reachable.
  TORCH_INDEX_URL  default: PyPI (its Linux wheel is the CUDA build, which runs on CPU); set it to
                   https://download.pytorch.org/whl/cpu where the PyTorch index is reachable.
The host's CA bundle and pip config are mounted into the build's RUN steps (read-only, never committed), so a
TLS-intercepting egress proxy works during the build without entering the images.
Env: ASR_IMAGES_REPORT (default .work/images/report.json) receives the sizes and build times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "localhost"
DEBIAN_RELEASE = "bookworm"
MIRROR = os.environ.get("ASR_DEBIAN_MIRROR", "http://deb.debian.org")
# The official python:3.11-slim-bookworm, approximately: Debian's python3 (3.11 on bookworm) as `python`, venv,
# CA certificates, /etc/services, and useradd (the runtime stage creates its user).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase", "passwd")
DEFAULT_TORCH_INDEX = "https://pypi.org/simple"
_SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache"}


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: str  # relative to the repository root (the build context)
    target: str | None
    tag: str
    # Stages whose result the final image only copies from (COPY --from): nothing else refers to them, so they are
    # tagged `localhost/<name>-cache:<stage>-<key>`. Tagged, the next build reuses them (torch is a 5-GB layer) and
    # the next change of sources removes them with their untagged parents, like the final image's stale builds.
    cache_stages: tuple[str, ...] = ()


IMAGES = (
    ImageSpec("asr-inference", "inference/Dockerfile", "cpu", "cpu", cache_stages=("venv-cpu",)),
    ImageSpec("asr-operator", "operator/Dockerfile", None, "dev", cache_stages=("builder",)),
)


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, **kw)  # type: ignore[call-overload,no-any-return]


def image_id(ref: str) -> str | None:
    """The local image's ID, or None when it does not exist."""
    p = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
        capture_output=True,
        text=True,
    )
    return p.stdout.strip() or None if p.returncode == 0 else None


def image_size(ref: str) -> int:
    out = run(["podman", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True).stdout
    return int(out.strip())


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------
# The base image


def base_sources() -> list[str]:
    return [
        f"deb {MIRROR}/debian {DEBIAN_RELEASE} main",
        f"deb {MIRROR}/debian {DEBIAN_RELEASE}-updates main",
        f"deb {MIRROR}/debian-security {DEBIAN_RELEASE}-security main",
    ]


def local_base(create: bool) -> str:
    """localhost/asr-base:<release>-<key>: made by mmdebstrap once per package list and mirror."""
    key = digest(*(s.encode() for s in (DEBIAN_RELEASE, *BASE_PACKAGES, *base_sources())))
    ref = f"{REGISTRY}/asr-base:{DEBIAN_RELEASE}-{key}"
    if image_id(ref):
        return ref
    if not create:
        sys.exit(f"images: the base image {ref} is not built yet: run `make images`")
    if not shutil.which("mmdebstrap"):
        sys.exit("images: mmdebstrap is missing (apt-get install mmdebstrap), or set BASE_IMAGE")
    with tempfile.TemporaryDirectory(prefix="asr-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        started = time.monotonic()
        packages = "--include=" + ",".join(BASE_PACKAGES)
        mmdebstrap = ["mmdebstrap", "--variant=minbase", packages, DEBIAN_RELEASE, str(rootfs), *base_sources()]
        run(mmdebstrap, stdout=subprocess.DEVNULL)
        # what the official image sets too: a UTF-8 locale without locale packages
        run(["podman", "import", "--change", "ENV=LANG=C.UTF-8", str(rootfs), ref], stdout=subprocess.DEVNULL)
        print(f"images: base {ref} made in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return ref


# --------------------------------------------------------------------------------------------------------------
# Content keys


def copy_sources(dockerfile: Path) -> list[str]:
    """The repository paths the Dockerfile's COPY instructions read (COPY --from=<stage> reads no context)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        out += [w for w in words[1:-1] if not w.startswith("--")]
    return sorted(set(out))


def context_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for rel in paths:
        p = ROOT / rel
        if not p.exists():
            sys.exit(f"images: COPY source {rel} does not exist")
        found = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        files += [f for f in found if not _SKIP_PARTS.intersection(f.parts) and f.suffix not in (".pyc", ".pyo")]
    return files


def declared_args(dockerfile: Path) -> set[str]:
    return set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", dockerfile.read_text(), flags=re.M))


def build_args(spec: ImageSpec, base: str) -> dict[str, str]:
    wanted = {"BASE_IMAGE": base, "TORCH_INDEX_URL": os.environ.get("TORCH_INDEX_URL", DEFAULT_TORCH_INDEX)}
    return {k: v for k, v in wanted.items() if k in declared_args(ROOT / spec.dockerfile)}


def content_key(spec: ImageSpec, args: dict[str, str], base_id: str) -> str:
    dockerfile = ROOT / spec.dockerfile
    parts = [dockerfile.read_bytes(), (spec.target or "").encode(), base_id.encode(), b"format=docker"]
    parts += [f"{k}={v}".encode() for k, v in sorted(args.items())]
    for f in context_files(copy_sources(dockerfile)):
        parts += [str(f.relative_to(ROOT)).encode(), f.read_bytes()]
    return digest(*parts)


# --------------------------------------------------------------------------------------------------------------
# Building


def host_trust_mounts() -> list[str]:
    """The host's CA bundle and pip config, for the RUN steps only (pip and apt behind an intercepting proxy)."""
    mounts = []
    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(bundle).is_file():
        mounts += ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    if Path("/etc/pip.conf").is_file():
        mounts += ["--volume", "/etc/pip.conf:/etc/pip.conf:ro"]
    return mounts


def bud(spec: ImageSpec, target: str | None, ref: str, args: dict[str, str]) -> None:
    # docker format: the OCI image config has no HEALTHCHECK, which the inference image declares for Docker users.
    # --force-rm: a failed step (a full disk) leaves no working container holding its multi-GB layers.
    argv = ["buildah", "bud", "--layers", "--force-rm", "--format", "docker", "--isolation", "chroot"]
    argv += ["-f", spec.dockerfile] + (["--target", target] if target else [])
    for k, v in sorted(args.items()):
        argv += ["--build-arg", f"{k}={v}"]
    argv += host_trust_mounts()
    argv += ["-t", ref, "."]
    run(argv, cwd=ROOT)


def cache_ref(spec: ImageSpec, stage: str, ref: str) -> str:
    return f"{REGISTRY}/{spec.name}-cache:{stage}-{ref.rpartition('-')[2]}"


def build(spec: ImageSpec, ref: str, args: dict[str, str]) -> float:
    started = time.monotonic()
    for stage in spec.cache_stages:  # first, so a failed final stage still leaves them tagged for the next try
        bud(spec, stage, cache_ref(spec, stage, ref), args)
    bud(spec, spec.target, ref, args)  # its stages come from the cache just made; main() moves <name>:<tag> to it
    return time.monotonic() - started


def drop_stale(repository: str, prefix: str, keep: str) -> None:
    """Remove the images of `repository` tagged `<prefix>*` other than `keep`: builds from older sources (a
    CUDA-torch image is ~7 GB). `podman rmi` takes their untagged parents no other image uses with them."""
    listing = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repository], capture_output=True)
    stale = [r for r in listing.stdout.split() if r.startswith(f"{repository}:{prefix}") and r != keep]
    if stale:
        subprocess.run(["podman", "rmi", *stale], capture_output=True)


def resolve_base(create: bool) -> tuple[str, str]:
    base = os.environ.get("BASE_IMAGE") or local_base(create)
    base_id = image_id(base)
    if base_id is None:  # a registry image not pulled yet
        if not create:
            sys.exit(f"images: the base image {base} is not pulled yet: run `make images`")
        run(["buildah", "pull", base], stdout=subprocess.DEVNULL)
        base_id = image_id(base) or ""
    return base, base_id


def refs(base: str, base_id: str) -> list[tuple[ImageSpec, str, dict[str, str]]]:
    out = []
    for spec in IMAGES:
        args = build_args(spec, base)
        out.append((spec, f"{REGISTRY}/{spec.name}:{spec.tag}-{content_key(spec, args, base_id)}", args))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tags", action="store_true", help="print name=tag for the current sources; build nothing")
    opts = ap.parse_args()
    for tool in ("buildah", "podman"):
        if not shutil.which(tool):
            sys.exit(f"images: {tool} is missing (apt-get install buildah podman)")
    base, base_id = resolve_base(create=not opts.tags)
    if opts.tags:
        for spec, ref, _ in refs(base, base_id):
            print(f"{spec.name}={ref}")
        return 0
    report_path = Path(os.environ.get("ASR_IMAGES_REPORT", ROOT / ".work" / "images" / "report.json"))
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for spec, ref, args in refs(base, base_id):
        if image_id(ref):
            print(f"images: {ref} is up to date", file=sys.stderr)
            if report.get(spec.name, {}).get("ref") != ref:  # built by another run: its build time is unknown
                report[spec.name] = {"ref": ref, "base": base}
        else:
            seconds = build(spec, ref, args)
            report[spec.name] = {"ref": ref, "build_seconds": round(seconds), "base": base}
        run(["buildah", "tag", ref, f"{REGISTRY}/{spec.name}:{spec.tag}"])
        drop_stale(f"{REGISTRY}/{spec.name}", f"{spec.tag}-", keep=ref)
        for stage in spec.cache_stages:
            drop_stale(f"{REGISTRY}/{spec.name}-cache", f"{stage}-", keep=cache_ref(spec, stage, ref))
        entry = report[spec.name]
        entry["size_mb"] = round(image_size(ref) / 1e6)
        print(f"{spec.name}: {ref}  {entry['size_mb']} MB  built in {entry.get('build_seconds', '?')} s")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
