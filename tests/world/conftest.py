import pytest

from gog_jax.world.world import SMALL_WORLD, WorldConfig, build_world


@pytest.fixture(scope="session")
def default_world():
    return build_world(WorldConfig())


@pytest.fixture(scope="session")
def small_world():
    return build_world(SMALL_WORLD)


@pytest.fixture(scope="session")
def default_backend(default_world):
    from gog_jax.world.index import world_backend  # pylint: disable=import-outside-toplevel
    return world_backend(default_world)


@pytest.fixture(scope="session")
def small_backend(small_world):
    from gog_jax.world.index import world_backend  # pylint: disable=import-outside-toplevel
    return world_backend(small_world)
