"""Derived images for requirements and include_data, built on a real Docker engine."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import anyio
import pytest

from triggerfish import Engine, InvocationFailedError, ServiceState
from triggerfish.engine.runtimes.images import BuildState, ImageBuilder, Recipe
from triggerfish.errors import ImageBuildError

from . import fns
from .conftest import BASE_IMAGE

pytestmark = pytest.mark.anyio

BASE = BASE_IMAGE


@pytest.fixture(autouse=True)
async def _remove_what_a_test_built(docker: aiodocker.Docker) -> AsyncIterator[None]:
    before = {i["Id"] for i in await _derived(docker)}
    yield
    for image in await _derived(docker):
        if image["Id"] not in before:
            await docker.images.delete(str(image["Id"]), force=True)


async def _derived(client: aiodocker.Docker) -> list[dict[str, object]]:
    found: list[dict[str, object]] = await client.images.list(
        filters={"label": ["triggerfish.recipe"]}
    )
    return found


async def _run(client: aiodocker.Docker, image: str, code: str) -> str:
    container = await client.containers.run({"Image": image, "Cmd": ["python3", "-c", code]})
    try:
        status = await container.wait()
        output = "".join(await container.log(stdout=True, stderr=True))
    finally:
        await container.delete(force=True)
    assert status["StatusCode"] == 0, output
    return output


def _data(root: Path) -> str:
    """A data folder with content unique to this run, so the image is built, not found."""
    token = secrets.token_hex(8)
    (root / "conf").mkdir()
    (root / "conf" / "settings.txt").write_text(token)
    (root / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (root / "notes.md").write_text("not included")
    return token


async def test_a_plain_recipe_is_the_base_image(docker: aiodocker.Docker, tmp_path: Path) -> None:
    builder = ImageBuilder(docker, tmp_path / "logs")
    assert await builder.image_for(Recipe(base=BASE)) == BASE
    assert builder.builds() == []


async def test_requirements_and_data_are_in_the_image(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    token = _data(tmp_path)
    recipe = Recipe(
        base=BASE,
        requirements=("six==1.16.0",),
        include_data=("conf", "*.bin"),
        root=tmp_path,
    )
    builder = ImageBuilder(docker, tmp_path / "logs")
    image = await builder.image_for(recipe)
    assert image.startswith("triggerfish/derived:")
    code = (
        "import os, six; print(six.__version__, open('conf/settings.txt').read(),"
        " os.path.getsize('weights.bin'), os.path.exists('notes.md'))"
    )
    assert (await _run(docker, image, code)).split() == ["1.16.0", token, "200", "False"]
    (build,) = builder.builds()
    assert build.state is BuildState.BUILT and "six" in build.log_text
    assert (tmp_path / "logs" / f"{build.key}.log").read_text() == build.log_text

    # The same recipe again: no second build; a new builder (a restart) finds the image.
    assert await builder.image_for(recipe) == image and len(builder.builds()) == 1
    again = ImageBuilder(docker, tmp_path / "logs2")
    assert await again.image_for(recipe) == image
    assert "built before" in again.builds()[0].log_text

    # A data file changed is another image.
    (tmp_path / "conf" / "settings.txt").write_text("changed")
    changed = await builder.image_for(recipe)
    assert changed != image
    assert (await _run(docker, changed, "print(open('conf/settings.txt').read())")).strip() == (
        "changed"
    )


async def test_concurrent_starts_share_one_build(docker: aiodocker.Docker, tmp_path: Path) -> None:
    _data(tmp_path)
    recipe = Recipe(base=BASE, include_data=("conf",), root=tmp_path)
    builder = ImageBuilder(docker, tmp_path / "logs")
    images: list[str] = []

    async def start() -> None:
        images.append(await builder.image_for(recipe))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(start)
    assert len(set(images)) == 1 and len(images) == 5
    assert len(builder.builds()) == 1


async def test_a_failed_build_keeps_its_log_and_fails_fast(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    recipe = Recipe(
        base=BASE, requirements=(f"triggerfish-no-such-package-{secrets.token_hex(4)}",)
    )
    builder = ImageBuilder(docker, tmp_path / "logs")
    with pytest.raises(ImageBuildError) as failed:
        await builder.image_for(recipe)
    assert "failed to build" in str(failed.value)
    assert "no matching distribution" in failed.value.log.lower()
    (build,) = builder.builds()
    assert build.state is BuildState.BUILD_FAILED
    assert (tmp_path / "logs" / f"{build.key}.log").read_text() == failed.value.log
    with anyio.fail_after(1):  # remembered: no second pip run
        with pytest.raises(ImageBuildError) as again:
            await builder.image_for(recipe)
    assert again.value.log == failed.value.log


@pytest.mark.parametrize(
    ("include", "says"),
    [
        (("missing/*.csv",), "matches no file"),
        (("nothing-here.txt",), "matches no file"),
        (("/etc/passwd",), "relative"),
        (("../outside",), "relative"),
    ],
)
async def test_bad_include_data_names_the_entry(
    docker: aiodocker.Docker, tmp_path: Path, include: tuple[str, ...], says: str
) -> None:
    builder = ImageBuilder(docker, tmp_path / "logs")
    with pytest.raises(ImageBuildError) as refused:
        await builder.image_for(Recipe(base=BASE, include_data=include, root=tmp_path))
    assert says in str(refused.value) and repr(include[0]) in str(refused.value)


async def test_a_missing_base_image_says_how_to_get_it(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    builder = ImageBuilder(docker, tmp_path / "logs")
    recipe = Recipe(base="triggerfish/no-such-image:0", requirements=("six",))
    with pytest.raises(ImageBuildError, match=r"build-base-image\.sh"):
        await builder.image_for(recipe)


async def test_a_function_runs_in_its_derived_image(
    docker: aiodocker.Docker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _data(tmp_path)
    monkeypatch.chdir(tmp_path)  # include_data is relative to the working directory
    engine = Engine(tmp_path / "faas.db")
    engine.function(
        fns.six_and_settings,
        runtime="docker",
        requirements=("six==1.16.0",),
        include_data=("conf",),
    )
    async with engine:
        assert await engine.handle(fns.six_and_settings).call_remote() == f"1.16.0 {token}"
        assert engine.service_status("six_and_settings").state is ServiceState.ACTIVE


async def test_a_failed_build_fails_executions_with_its_log(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    engine = Engine(tmp_path / "faas.db")
    missing = f"triggerfish-no-such-package-{secrets.token_hex(4)}"
    engine.function(fns.where, runtime="docker", requirements=(missing,))
    async with engine:
        handle = engine.handle(fns.where)
        with pytest.raises(InvocationFailedError, match="failed to build"):
            await handle.call_remote()
        status = engine.service_status("where")
        assert status.state is ServiceState.BUILD_FAILED
        assert status.error is not None and status.error.type == "ImageBuildError"
        assert "no matching distribution" in status.error.traceback.lower()  # the whole log
        with anyio.fail_after(5):  # remembered: fails at once, no second pip run
            with pytest.raises(InvocationFailedError, match="failed to build"):
                await handle.call_remote()
