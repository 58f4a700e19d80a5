"""The library's build steps that run without Fortran: air/vacuum, MARCS I/O and
interpolation, line-list conversion, instrumental broadening."""

from __future__ import annotations

import gzip

import fitsio
import numpy as np
import pytest

from rrnet.synth import linelists as ll
from rrnet.synth.library import VACUUM_WINDOWS, broaden, output_grid, synthesis_windows_air
from rrnet.synth.marcs import COLUMNS, LINES_PER_MODEL, N_DEPTH, MarcsGrid
from rrnet.synth.turbospectrum import air_to_vacuum, vacuum_to_air


def edlen_vacuum_to_air(vac: np.ndarray) -> np.ndarray:
    """Edlen (1966) standard air, an independent formula from the Morton (2000) one used."""
    s2 = (1e4 / vac) ** 2
    return vac / (1 + 1e-8 * (8342.13 + 2406030.0 / (130.0 - s2) + 15997.0 / (38.9 - s2)))


def test_air_vacuum_against_edlen_and_each_other():
    vac = np.linspace(4900.0, 6800.0, 2001)
    air = vacuum_to_air(vac)
    np.testing.assert_allclose(air, edlen_vacuum_to_air(vac), atol=2e-3)  # A
    np.testing.assert_allclose(air_to_vacuum(air), vac, atol=1e-5)
    assert float(np.min(vac - air)) > 1.3 and float(np.max(vac - air)) < 1.9


def test_synthesis_windows_cover_shipped_windows_in_air():
    windows = synthesis_windows_air()
    for lo, hi in VACUUM_WINDOWS:
        a, b = vacuum_to_air(np.array([lo, hi]))
        assert any(w0 <= a - 1.5 and w1 >= a for w0, w1, _ in windows)
        assert any(w0 <= b and w1 >= b + 1.5 for w0, w1, _ in windows)
    hydrogen = [w for w in windows if w[2]]
    assert len(hydrogen) == 1 and hydrogen[0][0] < 6562.8 < hydrogen[0][1]
    # contiguous red coverage: each window starts where the previous ended
    red = sorted(w[:2] for w in windows if w[0] > 6000)
    assert all(np.isclose(red[i][1], red[i + 1][0]) for i in range(len(red) - 1))


def test_broaden_preserves_equivalent_width_and_sets_resolution():
    step = 0.01
    wave = np.arange(VACUUM_WINDOWS[0][0] - 3, VACUUM_WINDOWS[0][1] + 3, step)
    red = np.arange(VACUUM_WINDOWS[1][0] - 3, VACUUM_WINDOWS[1][1] + 3, step)
    wave = np.concatenate([wave, red])
    centre, sigma0 = 5200.0, 0.02
    flux = 1 - 0.5 * np.exp(-0.5 * ((wave - centre) / sigma0) ** 2)
    out = broaden(wave, flux, 20000.0, 0.05)
    grid = output_grid(0.05)
    ew_in = 0.5 * sigma0 * np.sqrt(2 * np.pi)
    ew_out = float(np.sum(1 - out[np.abs(grid - centre) < 3]) * 0.05)
    assert ew_out == pytest.approx(ew_in, rel=1e-3)
    sigma_r = centre / 20000.0 / (2 * np.sqrt(2 * np.log(2)))
    depth = ew_in / np.sqrt(2 * np.pi * (sigma0**2 + sigma_r**2))
    assert 1 - out[np.argmin(np.abs(grid - centre))] == pytest.approx(depth, rel=0.01)
    assert np.allclose(out[np.abs(grid - centre) > 3], 1.0, atol=1e-9)


def _fake_model(teff: float, logg: float, mh: float) -> list[str]:
    """A MARCS-format text block whose structure is a known function of the parameters."""
    kind = "s" if logg <= 3 else "p"
    head = [
        f"{kind}{teff:.0f}_g{logg:+.1f}_m1.0_t02_x3_z{mh:+.2f}_a+0.00",
        f"  {teff:.0f}.      Teff [K]",
        "  1.0E+10 Flux [erg/cm2/s]",
        f"  {10**logg:.4E} Surface gravity [cm/s2]",
        "  2.0        Microturbulence parameter [km/s]",
        "  1.0        Mass [Msun]",
        f" {mh:+.2f} +0.00 Metallicity [Fe/H] and [alpha/Fe]",
        f"  {1e12 * (1 + teff / 1e4):.4E} Radius [cm] at Tau(Rosseland)=1.0"
        if kind == "s"
        else "  1.0000E+00 1 cm radius for plane-parallel models",
        f"  {N_DEPTH} Number of depth points",
        "Model structure",
        " k lgTauR  lgTau5    Depth     T        Pe          Pg         Prad       Pturb",
    ]
    rows = []
    for k in range(N_DEPTH):
        tau = -5 + 7 * k / (N_DEPTH - 1)
        t = teff * (0.7 + 0.05 * k / 10) + 100 * mh
        pe = 10 ** (tau + 0.3 * logg + 0.5 * mh)
        pg = 10 ** (2 + tau + 0.6 * logg)
        rows.append(
            f"{k + 1:3d} {tau:5.2f} {tau + 0.01:7.4f} {1e7 * k:10.3E} {t:7.1f} {pe:11.4E} "
            f"{pg:11.4E} {1e-1:11.4E} {0:11.4E}"
        )
    block = head + rows
    return block + ["filler"] * (LINES_PER_MODEL - len(block))


@pytest.fixture(scope="module")
def fake_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("marcs")
    nodes = [(t, g, m) for t in (4000.0, 4250.0) for g in (2.5, 3.0, 3.5) for m in (-0.25, 0.0)]
    text = [line for node in nodes for line in _fake_model(*node)]
    with gzip.open(root / "marcs_data.txt.gz", "wt") as fh:
        fh.write("\n".join(text) + "\n")
    index = np.zeros(
        len(nodes), dtype=[("index", "i8"), ("teff", "f8"), ("logg", "f8"), ("metal", "f8")]
    )
    index["index"] = np.arange(len(nodes))
    index["teff"], index["logg"], index["metal"] = np.array(nodes).T
    fitsio.write(str(root / "marcs_index.fits"), index, clobber=True)
    return MarcsGrid(root, teff_range=(3000, 7000), mh_range=(-1, 1))


def test_marcs_interpolation_recovers_known_structure(fake_grid):
    atm = fake_grid.interpolate(4100.0, 2.8, -0.1, 1.3)
    s = atm.structure
    k = np.arange(N_DEPTH)
    tau = -5 + 7 * k / (N_DEPTH - 1)
    np.testing.assert_allclose(s[:, COLUMNS.index("T")], 4100 * (0.7 + 0.005 * k) - 10, atol=0.11)
    # pressures are interpolated in log: log-linear truths come back to rounding precision
    np.testing.assert_allclose(
        np.log10(s[:, COLUMNS.index("Pe")]), tau + 0.3 * 2.8 - 0.05, atol=3e-4
    )
    assert atm.spherical and atm.radius_cm == pytest.approx(1e12 * 1.41, rel=1e-4)
    # a model straddling spherical (log g 3) and plane-parallel (3.5) corners is plane-parallel
    assert not fake_grid.interpolate(4100.0, 3.2, -0.1, 1.3).spherical
    with pytest.raises(ValueError, match="outside"):
        fake_grid.interpolate(4500.0, 2.8, -0.1, 1.3)


def test_marcs_text_is_what_turbospectrum_reads(fake_grid):
    """babsma finds 'Radius' in columns 14-19 (or 'radius' in 19-24) and the table after
    'Model structure'; reading our text back gives the structure."""
    for logg in (2.8, 3.4):
        atm = fake_grid.interpolate(4100.0, logg, -0.1, 1.3)
        lines = atm.to_marcs_text().splitlines()
        assert lines[0][0] == ("s" if atm.spherical else "p")
        radius_line = next(x for x in lines if "adius" in x)
        assert radius_line[13:19] == "Radius" or radius_line[18:24] == "radius"
        start = lines.index("Model structure") + 2
        assert int(lines[start - 3].split()[0]) == N_DEPTH
        table = np.array([x.split()[1:] for x in lines[start : start + N_DEPTH]], dtype=float)
        np.testing.assert_allclose(table, atm.structure, rtol=2e-4, atol=6e-3)


def test_linelist_selection_and_molecule_conversion(tmp_path):
    atoms = tmp_path / "atoms"
    atoms.write_text(
        "'  26.000            '    1         3\n'Fe I  '\n"
        "  5232.940  2.940 -0.060   -7.500    9.0  1.0E+08 'p' 'd'   0.0    1.0 'strong'\n"
        "  5233.000  5.000 -6.000   -7.500    9.0  1.0E+08 'p' 'd'   0.0    1.0 'weak'\n"
        "  7000.000  2.000 -1.000   -7.500    9.0  1.0E+08 'p' 'd'   0.0    1.0 'outside'\n"
        "'  14.000            '    2         1\n'Si II '\n"
        "  6347.109  8.121 -4.000   -7.690    4.0  1.2E+09 's' 'p'   0.0    1.0 'ion'\n"
    )
    blocks = ll.select_atomic(ll.read_turbospectrum(atoms), [(5000, 5400), (6300, 6700)], -13)
    kept = [row.split()[0] for b in blocks for row in b.lines]
    # weak: -6 + 7.45 - 11 - 0.775 * 5 = -13.4 (dropped); the Si II line (-13.8 as a neutral)
    # is kept thanks to the +3 of the ion term
    assert kept == ["5232.940", "6347.109"]
    out = tmp_path / "out.list"
    assert ll.write_turbospectrum(blocks, out) == 2
    again = ll.read_turbospectrum(out)
    assert [b.element for b in again] == [26, 14] and [b.ion for b in again] == [1, 2]
    assert again[0].header.split()[-1] == "1"

    moog = tmp_path / "moogcn.gz"
    with gzip.open(moog, "wt") as fh:
        fh.write("CN lines\n")
        fh.write("  5100.000 607.01214     0.500    -2.000               7.724\n")
        fh.write("  5100.100 607.01314     0.500    -2.000               7.724\n")  # 13C
        fh.write("  5100.200 607.01214     0.500   -12.000               7.724\n")  # weak
        fh.write("  4000.000 607.01214     0.500    -2.000               7.724\n")  # outside
    (mol,) = ll.read_moog_molecules(moog, [(5000, 5400)], min_strength=-7)
    assert mol.header.startswith("'0607.012014") and len(mol.lines) == 1
    wave, chi, loggf, _fdamp, _gu, grad = (float(v) for v in mol.lines[0].split())
    assert (wave, chi, loggf) == (5100.0, 0.5, -2.0) and grad > 0
