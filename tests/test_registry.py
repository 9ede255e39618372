import pytest

from unseen.errors import ConfigError
from unseen.registry import Registry


def test_lookup_and_unknown_name_lists_known():
    registry: Registry[int] = Registry("thing", key="thing.name")
    registry.register("b")(2)
    registry.register("a")(1)
    assert registry.get("a") == 1
    assert list(registry) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"^thing\.name: unknown thing 'c'; known: a, b$"):
        registry.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(3)
