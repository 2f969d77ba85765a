"""The test suite's device switch (tests/conftest.py): CNSDIFF_TEST_DEVICE, the `device` and `device_key` fixtures."""
from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import DEVICE_VARIABLE, device_from_env


def test_the_default_is_the_cpu():
    assert device_from_env(None) == torch.device("cpu")  # the variable unset
    assert device_from_env("") == torch.device("cpu") and device_from_env("  ") == torch.device("cpu")
    assert device_from_env("cpu") == torch.device("cpu") and device_from_env(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("value", ["gpu0", "cuda:x", "0"])
def test_a_value_that_is_no_device_is_one_line_naming_the_variable(value):
    with pytest.raises(pytest.UsageError) as info:
        device_from_env(value)
    message = str(info.value)
    assert message.startswith(f"CNSDIFF_TEST_DEVICE={value!r} is not a device the tests can run on (device: ")
    assert "is not one of auto, cpu, cuda, cuda:N" in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_this_machine_lacks_is_named_clearly():
    with pytest.raises(pytest.UsageError, match=r"CNSDIFF_TEST_DEVICE='cuda:0' .*no CUDA GPU is available"):
        device_from_env("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_a_gpu_is_resolved_to_its_index():
    assert device_from_env("cuda") == torch.device("cuda:0") == device_from_env("cuda:0")


def test_the_fixtures_are_the_variables_device(device, device_key):
    assert device == device_from_env(os.environ.get(DEVICE_VARIABLE))
    assert device_key == str(device) and torch.device(device_key) == device
    if DEVICE_VARIABLE not in os.environ:
        assert device == torch.device("cpu") and device_key == "cpu"
