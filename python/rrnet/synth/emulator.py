"""An emulator of the reference library: labels -> normalised spectrum in ~ms.

The network is The Payne's (Ting et al. 2019: labels scaled to [-0.5, 0.5], two hidden
LeakyReLU layers, the whole spectrum as output) with a polynomial skip path, because the
library has hundreds, not tens of thousands, of stars:

    flux = W_poly . phi(x) + b + MLP(x)

phi holds the terms up to third order in the main labels (Teff, log g, [Fe/H], vmic; cubic
terms only with Teff or log g) and, for each other abundance [X/Fe], the linear term and
its products with Teff and log g (a Cannon-like model, 73 terms). W_poly is fitted in closed
form (ridge); the MLP (zero-initialised output) is then trained on what is left, with early
stopping on a validation part of the training stars. Abundances enter as [X/Fe], which
decorrelates them from metallicity. Weights ship as safetensors (float16) plus a JSON file
with the label scaling and the measured held-out accuracy.

Train with ``python -m rrnet.synth.emulator --train`` (a few minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rrnet.synth.library import DATA_DIR, ELEMENTS, LABEL_NAMES, Library, load_library

ELEMENT_LABELS = tuple(ELEMENTS)

WEIGHTS_FILE = DATA_DIR / "emulator.safetensors"
CONFIG_FILE = DATA_DIR / "emulator.json"


def to_features(labels: np.ndarray) -> np.ndarray:
    """Method §5 labels [n, 18] -> network features: [X/H] -> [X/Fe] for all X except Fe."""
    x = np.array(labels, dtype=np.float64, copy=True)
    fe = LABEL_NAMES.index("FeH")
    for i, name in enumerate(LABEL_NAMES):
        if name in ELEMENT_LABELS and name != "FeH":
            x[:, i] -= x[:, fe]
    return x


MAIN = ("Teff[K]", "Logg", "FeH", "vmic")
# Which main labels multiply each [X/Fe] in phi; chosen on validation stars when training.
CROSS_CANDIDATES = ((), ("Teff[K]",), ("Teff[K]", "Logg"))


def poly_terms(n_labels: int, cross: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Index tuples of the polynomial terms in phi (feature indices in LABEL_NAMES order).

    ``cross``: the main labels whose products with each [X/Fe] are included.
    """
    main = [LABEL_NAMES.index(n) for n in MAIN]
    crossed = [LABEL_NAMES.index(n) for n in cross]
    others = [i for i in range(n_labels) if i not in main]
    terms: list[tuple[int, ...]] = [(i,) for i in main]
    terms += [(main[a], main[b]) for a in range(4) for b in range(a, 4)]
    terms += [
        (main[a], main[b], main[c]) for a in range(2) for b in range(a, 4) for c in range(b, 4)
    ]
    terms += [(o,) for o in others] + [(o, t) for o in others for t in crossed]
    return terms


class PayneNet(nn.Module):
    """Polynomial skip path + Payne MLP: scaled labels [n, 18] -> flux [n, n_pixels]."""

    def __init__(self, n_labels: int, n_hidden: int, n_pixels: int, cross: tuple[str, ...]):
        super().__init__()
        self.cross = tuple(cross)
        self.terms = poly_terms(n_labels, self.cross)
        self.poly = nn.Linear(len(self.terms), n_pixels)
        self.mlp = nn.Sequential(
            nn.Linear(n_labels, n_hidden),
            nn.LeakyReLU(0.01),
            nn.Linear(n_hidden, n_hidden),
            nn.LeakyReLU(0.01),
            nn.Linear(n_hidden, n_pixels),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """The polynomial features of scaled labels."""
        cols = []
        for term in self.terms:
            col = x[:, term[0]]
            for i in term[1:]:
                col = col * x[:, i]
            cols.append(col)
        return torch.stack(cols, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.poly(self.phi(x)) + self.mlp(x)


@dataclass
class Emulator:
    """Fast synthetic spectra for any labels inside ``bounds`` (method §5 names, vacuum grid)."""

    model: PayneNet
    wavelength: np.ndarray
    label_names: tuple[str, ...]
    feature_min: np.ndarray
    feature_max: np.ndarray
    bounds: dict[str, tuple[float, float]]
    accuracy: dict

    def spectra(self, labels: np.ndarray, check: bool = True) -> np.ndarray:
        """Normalised flux [n, n_wave] (float32) for labels [n, len(label_names)].

        Floored at 0: a star's flux is never negative (the library's is > 0), but the fit
        undershoots in the deepest bands of the coolest giants (down to -0.16 for stars
        drawn like the library's near Teff 4,100 K, log g 0.1; further in the label box's
        corners), which gave ``observe`` negative variances.
        """
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        if check:
            lo = np.array([self.bounds[n][0] for n in self.label_names])
            hi = np.array([self.bounds[n][1] for n in self.label_names])
            bad = (labels < lo - 1e-6) | (labels > hi + 1e-6)
            if bad.any():
                names = sorted({self.label_names[j] for j in np.nonzero(bad)[1]})
                raise ValueError(f"labels outside the emulator's training range: {names}")
        x = self._scale(to_features(labels))
        with torch.no_grad():
            y = self.model(torch.from_numpy(x.astype(np.float32)))
        return np.maximum(y.numpy(), 0.0)

    def spectrum(self, labels: Mapping[str, float] | np.ndarray, check: bool = True) -> np.ndarray:
        """Normalised flux [n_wave] for one star (a mapping by label name, or an array)."""
        if isinstance(labels, Mapping):
            labels = np.array([labels[n] for n in self.label_names], dtype=np.float64)
        return self.spectra(np.asarray(labels)[None, :], check=check)[0]

    def _scale(self, features: np.ndarray) -> np.ndarray:
        return self._scale_with(features, self.feature_min, self.feature_max)

    @staticmethod
    def _scale_with(features: np.ndarray, fmin: np.ndarray, fmax: np.ndarray) -> np.ndarray:
        return (features - fmin) / (fmax - fmin) - 0.5


def load_emulator(weights: Path = WEIGHTS_FILE, config: Path = CONFIG_FILE) -> Emulator:
    """Load the shipped emulator (CPU, float32)."""
    cfg = json.loads(Path(config).read_text())
    state = load_file(str(weights))
    wavelength = state.pop("wavelength").numpy().astype(np.float64)  # stored as float64
    state = {k: v.float() for k, v in state.items()}
    model = PayneNet(
        len(cfg["label_names"]), cfg["n_hidden"], wavelength.size, tuple(cfg["accuracy"]["cross"])
    )
    model.load_state_dict(state)
    model.eval()
    return Emulator(
        model=model,
        wavelength=wavelength,
        label_names=tuple(cfg["label_names"]),
        feature_min=np.array(cfg["feature_min"]),
        feature_max=np.array(cfg["feature_max"]),
        bounds={k: tuple(v) for k, v in cfg["bounds"].items()},
        accuracy=cfg["accuracy"],
    )


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out split of library rows."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(holdout * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def train(
    library: Library,
    n_hidden: int = 64,
    steps: int = 3000,
    lr: float = 1e-3,
    ridge: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2),
    holdout: float = 0.1,
    seed: int = 0,
    log_every: int = 500,
) -> tuple[Emulator, dict]:
    """Fit on the library minus a held-out set, measure accuracy on that set.

    A tenth of the training stars is kept for validation; on the other nine tenths:
    1. ridge least squares for the polynomial path; the [X/Fe] cross terms (one of
       ``CROSS_CANDIDATES``) and the penalty (one of ``ridge``, times n) picked by
       validation L1;
    2. Adam on the MLP (L1 loss on the residual), keeping the step with the lowest
       validation L1; if the MLP never helps it stays zero.
    """
    torch.manual_seed(seed)
    labels = library.labels.select(LABEL_NAMES).to_numpy()
    flux = library.flux.astype(np.float32)
    train_idx, test_idx = split(len(labels), holdout, seed)
    feats = to_features(labels)
    fmin, fmax = feats[train_idx].min(axis=0), feats[train_idx].max(axis=0)
    fmax = np.where(fmax > fmin, fmax, fmin + 1.0)
    # The valid domain is the library's label prior (held-out stars are drawn from it too).
    bounds = {
        n: (float(labels[:, i].min()), float(labels[:, i].max())) for i, n in enumerate(LABEL_NAMES)
    }
    t0 = time.time()
    fit_idx, val_idx = split(len(train_idx), 0.1, seed + 1)
    fit, val = torch.from_numpy(fit_idx), torch.from_numpy(val_idx)
    x = torch.from_numpy(Emulator._scale_with(feats[train_idx], fmin, fmax).astype(np.float32))
    y = torch.from_numpy(flux[train_idx])
    best_poly = (np.inf, None, None, None)  # validation L1, model, cross, ridge
    with torch.no_grad():
        for cross in CROSS_CANDIDATES:
            model = PayneNet(len(LABEL_NAMES), n_hidden, flux.shape[1], cross)
            phi = model.phi(x).double()
            design = torch.cat([phi, torch.ones(len(phi), 1, dtype=torch.float64)], dim=1)
            for r in ridge:
                coef = _ridge(design[fit], y[fit].double(), r)
                score = float(torch.mean(torch.abs(design[val] @ coef - y[val])))
                if score < best_poly[0]:
                    model.poly.weight.copy_(coef[:-1].T.float())
                    model.poly.bias.copy_(coef[-1].float())
                    best_poly = (score, model, cross, r)
    _, model, best_cross, best_ridge = best_poly
    emu = Emulator(model, library.wavelength, LABEL_NAMES, fmin, fmax, bounds, {})
    opt = torch.optim.Adam(model.mlp.parameters(), lr=lr)
    batch = min(128, len(fit_idx))
    best = (float(_l1(model, x[val], y[val])), 0, _mlp_state(model))
    model.train()
    for step in range(1, steps + 1):
        idx = torch.from_numpy(
            fit_idx[np.random.default_rng([seed, step]).integers(0, len(fit_idx), batch)]
        )
        loss = torch.mean(torch.abs(model(x[idx]) - y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            val_l1 = float(_l1(model, x[val], y[val]))
            if val_l1 < best[0]:
                best = (val_l1, step, _mlp_state(model))
            if log_every and step % log_every == 0:
                msg = f"step {step}: fit L1 {loss.item():.5f}, validation L1 {val_l1:.5f}"
                print(f"{msg} ({time.time() - t0:.0f} s)", flush=True)
    model.mlp.load_state_dict(best[2])
    model.eval()
    emu.accuracy = accuracy(emu, labels[test_idx], flux[test_idx], flux[train_idx])
    emu.accuracy.update(
        n_train=len(train_idx),
        n_test=len(test_idx),
        train_s=time.time() - t0,
        best_step=best[1],
        ridge=best_ridge,
        cross=list(best_cross),
    )
    return emu, emu.accuracy


def _ridge(design: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    gram = design.T @ design + penalty * len(design) * torch.eye(design.shape[1]).double()
    return torch.linalg.solve(gram, design.T @ y)


def _l1(model: PayneNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.mean(torch.abs(model(x) - y))


def _mlp_state(model: PayneNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.mlp.state_dict().items()}


def accuracy(emu: Emulator, labels: np.ndarray, flux: np.ndarray, train_flux: np.ndarray) -> dict:
    """Median / 99th-percentile |flux error| on held-out stars, and the mean-spectrum baseline."""
    err = np.abs(emu.spectra(labels, check=False) - flux)
    base = np.abs(train_flux.mean(axis=0) - flux)
    per_star = np.median(err, axis=1)
    return {
        "median_abs_err": float(np.median(err)),
        "p99_abs_err": float(np.percentile(err, 99)),
        "max_abs_err": float(err.max()),
        "worst_star_median_abs_err": float(per_star.max()),
        "baseline_median_abs_err": float(np.median(base)),
        "baseline_p99_abs_err": float(np.percentile(base, 99)),
    }


def save(emu: Emulator, weights: Path = WEIGHTS_FILE, config: Path = CONFIG_FILE) -> None:
    """Write float16 weights + wavelength (float64) and the JSON configuration."""
    state = {k: v.detach().half().contiguous() for k, v in emu.model.state_dict().items()}
    state["wavelength"] = torch.from_numpy(emu.wavelength.astype(np.float64))
    save_file(state, str(weights))
    n_hidden = emu.model.mlp[0].out_features
    cfg = {
        "label_names": list(emu.label_names),
        "n_hidden": n_hidden,
        "feature_min": emu.feature_min.tolist(),
        "feature_max": emu.feature_max.tolist(),
        "bounds": {k: list(v) for k, v in emu.bounds.items()},
        "accuracy": emu.accuracy,
        "features": "Teff, logg, [Fe/H], [X/Fe] for the other 14 X, vmic; scaled to [-0.5, 0.5]",
        "architecture": "polynomial skip path (poly_terms) + MLP 18-H-H-n_wave, LeakyReLU",
    }
    Path(config).write_text(json.dumps(cfg, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rrnet.synth.emulator", description=__doc__)
    parser.add_argument("--train", action="store_true", required=True)
    parser.add_argument("--library", type=Path, default=None)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    library = load_library(args.library) if args.library else load_library()
    emu, acc = train(library, n_hidden=args.hidden, steps=args.steps)
    # Refitting on all stars would leave the reported accuracy unmeasured: ship as trained.
    save(emu)
    print(json.dumps(acc, indent=1))


if __name__ == "__main__":
    main()
