"""Build the NPU image, with or without a reachable container registry.

The base is, in order: the one asked for; a local ``flowkit/npu-base`` from an
earlier build; an official python image if the engine can pull one; otherwise a
minimal Debian made here with debootstrap and ``docker import``ed. The image is
rebuilt only when the files under npu_image/ change (their hash is a label).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker.errors
from django.conf import settings

from node_runner.docker_engine import engine

NPU_IMAGE_DIR = Path(settings.BASE_DIR) / "npu_image"
DEBOOTSTRAP_BASE = "flowkit/npu-base:bookworm"
OFFICIAL_BASE = "python:3.11-slim-bookworm"
SOURCE_LABEL = "flowkit.npu.source"
BASE_LABEL = "flowkit.npu.base"
Say = Callable[[str], None]


class NpuImageError(Exception):
    pass


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(NPU_IMAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(NPU_IMAGE_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def image_is_current(tag: str | None = None) -> bool:
    try:
        image = engine().images.get(tag or settings.FLOWKIT_NPU_IMAGE)
    except docker.errors.ImageNotFound:
        return False
    return bool(image.labels.get(SOURCE_LABEL) == source_hash())


def build_npu_image(base: str = "auto", *, force: bool = False, say: Say = print) -> str:
    tag = settings.FLOWKIT_NPU_IMAGE
    if not force and image_is_current(tag):
        say(f"NPU image {tag} is up to date")
        return tag
    base_image = _resolve_base(base, say)
    say(f"building NPU image {tag} on {base_image}")
    try:
        engine().images.build(
            path=str(NPU_IMAGE_DIR),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            labels={SOURCE_LABEL: source_hash(), BASE_LABEL: base_image},
            rm=True,
            forcerm=True,
            pull=False,
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(line.get("stream", "")) for line in exc.build_log)[-2000:]
        raise NpuImageError(f"docker build of {tag} failed: {exc}\n{tail}") from None
    # Earlier builds of the NPU image are left untagged; drop them.
    with contextlib.suppress(docker.errors.APIError):
        engine().images.prune(filters={"dangling": True, "label": SOURCE_LABEL})
    say(f"built NPU image {tag}")
    return tag


def _resolve_base(base: str, say: Say) -> str:
    client = engine()
    if base not in ("auto", "debootstrap"):
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            say(f"pulling {base}")
            client.images.pull(base)
        return base
    if base == "auto":
        if _has_image(DEBOOTSTRAP_BASE):
            return DEBOOTSTRAP_BASE
        if _has_image(OFFICIAL_BASE):
            return OFFICIAL_BASE
        try:
            say(f"trying to pull {OFFICIAL_BASE}")
            client.images.pull(OFFICIAL_BASE)
            return OFFICIAL_BASE
        except docker.errors.DockerException as exc:
            say(f"cannot pull ({str(exc).splitlines()[0][:120]}); building a Debian base with debootstrap")
    _debootstrap_base(say)
    return DEBOOTSTRAP_BASE


def _has_image(name: str) -> bool:
    try:
        engine().images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _debootstrap_base(say: Say) -> None:
    if shutil.which("debootstrap") is None:
        raise NpuImageError(
            "no registry can be pulled and debootstrap is missing: apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise NpuImageError("building the Debian base with debootstrap needs root")
    mirror = os.environ.get("FLOWKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(prefix="flowkit-npu-base-") as workdir:
        root = Path(workdir) / "rootfs"
        say(f"debootstrap bookworm (minbase + python3) from {mirror}")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3-minimal,libpython3.11-stdlib",
                "bookworm",
                str(root),
                mirror,
            ]
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(root / junk, ignore_errors=True)
        say(f"importing the root filesystem as {DEBOOTSTRAP_BASE}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(["docker", "import", "-", DEBOOTSTRAP_BASE], stdin=tar.stdout)
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait()


def _run(command: list[str], stdin: object = None) -> None:
    result = subprocess.run(command, stdin=stdin, capture_output=True, text=True, check=False)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise NpuImageError(f"{command[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
