import pytest

from edgepipe.errors import EdgepipeError
from edgepipe.registry import Registry


def test_unknown_name_lists_closest():
    registry: Registry[int] = Registry("widget", list_command="edgepipe widgets")
    registry.add("resnet50", 1, aliases=("ResNet50",))
    registry.add("resnet101", 2)
    with pytest.raises(EdgepipeError) as info:
        registry.get("resnet05")
    assert "resnet50" in str(info.value) and "edgepipe widgets" in str(info.value)


def test_aliases_are_case_insensitive():
    registry: Registry[int] = Registry("widget")
    registry.add("mobilenet_v2", 7, aliases=("MobileNetV2",))
    assert registry.get("mobilenetv2") == 7
    assert registry.canonical("MOBILENET_V2") == "mobilenet_v2"


def test_duplicate_registration_fails():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError):
        registry.add("a", 2)
