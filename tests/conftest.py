"""Fixtures shared by the decoder tests."""
import pytest
from smollm2_nb.serve.decoders import CPU_ISAS, ISA_ENV, cpu_decode_kernels, cpu_isas

@pytest.fixture(params=list(CPU_ISAS))
def isa(request, monkeypatch):
    "Each class of the C++ step in turn, forced through $SMOLLM2_CPU_ISA; skipped where this CPU does not run it."
    if request.param not in cpu_isas(): pytest.skip(f'this CPU does not run {request.param} (it runs: {cpu_isas()})')
    if not cpu_decode_kernels(request.param): pytest.skip('no C++ compiler or ninja here')
    monkeypatch.setenv(ISA_ENV, request.param)
    return request.param
