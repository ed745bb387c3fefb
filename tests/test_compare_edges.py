"""trtflow.compare.core on outputs off the common path: complex values."""

from __future__ import annotations

import warnings

import numpy as np

from trtflow.compare.core import diff_one


def test_complex_outputs_compare_both_parts():
    ref = np.array([1 + 1j, 2 - 1j], np.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the imaginary part is never dropped with a ComplexWarning
        off = diff_one("z", ref, np.array([1 + 5j, 2 - 1j], np.complex64), 1e-5, 1e-5)
        same = diff_one("z", ref, ref.copy(), 1e-5, 1e-5)
    assert not off.passed and off.first_fail == (0,) and off.max_abs == 4.0
    assert same.passed and same.max_abs == 0.0
    nan = diff_one("z", np.array([complex(1, np.nan)]), np.array([complex(1, np.nan)]), 1e-5, 1e-5)
    assert not nan.passed
