"""trtflow.bench.report: figures are written in the formats the CLIs accept, by Python callers too."""

from __future__ import annotations

import pytest

from trtflow.bench.report import PLOT_SUFFIXES, check_plot_path, save_figure
from trtflow.errors import UsageError

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.mark.parametrize("name", ["plot.jpg", "plot", "plot.PNG.txt"])
def test_save_figure_refuses_a_suffix_the_clis_refuse_naming_the_ones_it_writes(tmp_path, name):
    """A .jpg name was written as JPEG (and a name without a suffix as PNG) although --plot refuses them."""
    fig = plt.figure()
    with pytest.raises(UsageError, match=r"\.png, \.svg or \.pdf"):
        save_figure(fig, tmp_path / name)
    assert not (tmp_path / name).exists()
    assert not plt.fignum_exists(fig.number)  # closed, not leaked


@pytest.mark.parametrize("name, start", [("p.png", b"\x89PNG"), ("p.SVG", b"<?xml"), ("sub/p.pdf", b"%PDF")])
def test_save_figure_writes_each_supported_format(tmp_path, name, start):
    path = save_figure(plt.figure(), tmp_path / name)
    assert path == tmp_path / name and path.read_bytes().startswith(start)
    assert PLOT_SUFFIXES == (".png", ".svg", ".pdf")


@pytest.mark.parametrize("path", ["", None, 3])
def test_check_plot_path_names_the_flag_and_refuses_what_is_no_file_name(path):
    with pytest.raises(UsageError, match="--plot"):
        check_plot_path(path, "--plot")
