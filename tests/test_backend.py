"""Backend selection: NumPy by default, CuPy only when usable, clear errors otherwise."""

import subprocess
import sys

import numpy as np
import pytest

from sflnet import SflnetError, backend


def test_cpu_is_numpy():
    assert backend.select_device("cpu") is np


def test_unknown_device_is_a_clear_error():
    with pytest.raises(SflnetError, match="unknown device 'tpu'"):
        backend.select_device("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is usable here; the no-GPU behaviour cannot be observed")
def test_gpu_without_gpu_is_an_error_and_auto_falls_back_once(capsys, monkeypatch):
    with pytest.raises(SflnetError, match="no GPU is usable"):
        backend.select_device("gpu")
    monkeypatch.setattr(backend, "_announced_fallback", False)
    assert backend.select_device("auto") is np
    assert backend.select_device("auto") is np
    err = capsys.readouterr().err
    assert err.count("running on the CPU") == 1


def test_import_sflnet_does_not_import_cupy():
    code = "import sys, sflnet, sflnet.models.cae, sflnet.nn; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_host_round_trip():
    a = np.arange(3.0)
    assert backend.to_host(backend.to_device(a, np)) is not None
    assert np.array_equal(backend.to_host(a), a)
    assert backend.get_array_module(a) is np
