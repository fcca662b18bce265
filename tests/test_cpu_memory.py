"""kdqat.cpu_memory: the glibc malloc tuning applies on Linux/glibc and is skipped elsewhere."""

import platform

import pytest

from kdqat import cpu_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc")
def test_applies_on_glibc():
    assert cpu_memory.keep_freed_memory() is True


def test_skipped_off_glibc(monkeypatch):
    monkeypatch.setattr(cpu_memory.platform, "system", lambda: "Darwin")
    assert cpu_memory.keep_freed_memory() is False
