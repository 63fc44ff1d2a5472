"""The NPU image: non-root, labelled with its source, nothing but python3 and the SDK."""

from __future__ import annotations

from django.conf import settings

from node_runner.npu_image_build import SOURCE_LABEL, image_is_current, source_hash


def test_image_runs_as_a_non_root_user_with_the_runtime_as_entrypoint(docker_engine):
    config = docker_engine.images.get(settings.FLOWKIT_NPU_IMAGE).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python3", "-m", "flowkit.forkserver"]


def test_image_is_labelled_with_the_hash_of_npu_image_sources(docker_engine):
    image = docker_engine.images.get(settings.FLOWKIT_NPU_IMAGE)
    assert image.labels[SOURCE_LABEL] == source_hash()
    assert image_is_current()


def test_image_has_no_setuid_binaries_and_no_secrets_in_its_config(docker_engine):
    output = docker_engine.containers.run(
        settings.FLOWKIT_NPU_IMAGE,
        entrypoint=["sh", "-c", "find / -xdev -perm /6000 -type f 2>/dev/null; true"],
        user="0", remove=True, network_mode="none",
    )  # fmt: skip
    assert output.strip() == b""
    env = docker_engine.images.get(settings.FLOWKIT_NPU_IMAGE).attrs["Config"]["Env"]
    assert not any(name.split("=")[0] in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL") for name in env)
