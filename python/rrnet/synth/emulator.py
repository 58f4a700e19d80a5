"""A Payne-style emulator of the reference library: labels -> normalised spectrum in ~ms.

As in The Payne (Ting et al. 2019), a small fully connected network maps labels scaled to
[-0.5, 0.5] onto the whole normalised spectrum. Abundances enter as [X/Fe] (and [Fe/H]),
which decorrelates them from metallicity. Weights ship as safetensors (float16) plus a JSON
file with the label scaling and the measured held-out accuracy.

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
    """SPEC labels [n, 18] -> network features: [X/H] -> [X/Fe] for all X except Fe."""
    x = np.array(labels, dtype=np.float64, copy=True)
    fe = LABEL_NAMES.index("FeH")
    for i, name in enumerate(LABEL_NAMES):
        if name in ELEMENT_LABELS and name != "FeH":
            x[:, i] -= x[:, fe]
    return x


class PayneNet(nn.Module):
    """labels -> hidden -> hidden -> spectrum, LeakyReLU as in The Payne."""

    def __init__(self, n_labels: int, n_hidden: int, n_pixels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_labels, n_hidden),
            nn.LeakyReLU(0.01),
            nn.Linear(n_hidden, n_hidden),
            nn.LeakyReLU(0.01),
            nn.Linear(n_hidden, n_pixels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class Emulator:
    """Fast synthetic spectra for any labels inside ``bounds`` (SPEC names, vacuum grid)."""

    model: PayneNet
    wavelength: np.ndarray
    label_names: tuple[str, ...]
    feature_min: np.ndarray
    feature_max: np.ndarray
    bounds: dict[str, tuple[float, float]]
    accuracy: dict

    def spectra(self, labels: np.ndarray, check: bool = True) -> np.ndarray:
        """Normalised flux [n, n_wave] (float32) for labels [n, len(label_names)]."""
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
        return y.numpy()

    def spectrum(self, labels: Mapping[str, float] | np.ndarray, check: bool = True) -> np.ndarray:
        """Normalised flux [n_wave] for one star (a mapping by label name, or an array)."""
        if isinstance(labels, Mapping):
            labels = np.array([labels[n] for n in self.label_names], dtype=np.float64)
        return self.spectra(np.asarray(labels)[None, :], check=check)[0]

    def _scale(self, features: np.ndarray) -> np.ndarray:
        return (features - self.feature_min) / (self.feature_max - self.feature_min) - 0.5


def load_emulator(weights: Path = WEIGHTS_FILE, config: Path = CONFIG_FILE) -> Emulator:
    """Load the shipped emulator (CPU, float32)."""
    cfg = json.loads(Path(config).read_text())
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    wavelength = state.pop("wavelength").double().numpy()
    model = PayneNet(len(cfg["label_names"]), cfg["n_hidden"], wavelength.size)
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
    n_hidden: int = 256,
    steps: int = 6000,
    lr: float = 1e-3,
    holdout: float = 0.1,
    seed: int = 0,
    log_every: int = 500,
) -> tuple[Emulator, dict]:
    """Fit the network on the library (minus a held-out set) and measure its accuracy."""
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
    emu = Emulator(
        PayneNet(len(LABEL_NAMES), n_hidden, flux.shape[1]),
        library.wavelength,
        LABEL_NAMES,
        fmin,
        fmax,
        bounds,
        {},
    )
    x = torch.from_numpy(emu._scale(feats[train_idx]).astype(np.float32))
    y = torch.from_numpy(flux[train_idx])
    opt = torch.optim.Adam(emu.model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    batch = min(128, len(x))
    t0 = time.time()
    emu.model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,))
        loss = torch.mean(torch.abs(emu.model(x[idx]) - y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(f"step {step}: train L1 {loss.item():.5f} ({time.time() - t0:.0f} s)", flush=True)
    emu.model.eval()
    emu.accuracy = accuracy(emu, labels[test_idx], flux[test_idx], flux[train_idx])
    emu.accuracy.update(n_train=len(train_idx), n_test=len(test_idx), train_s=time.time() - t0)
    return emu, emu.accuracy


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
    n_hidden = emu.model.net[0].out_features
    cfg = {
        "label_names": list(emu.label_names),
        "n_hidden": n_hidden,
        "feature_min": emu.feature_min.tolist(),
        "feature_max": emu.feature_max.tolist(),
        "bounds": {k: list(v) for k, v in emu.bounds.items()},
        "accuracy": emu.accuracy,
        "features": "Teff, logg, [Fe/H], [X/Fe] for the other 14 X, vmic; scaled to [-0.5, 0.5]",
    }
    Path(config).write_text(json.dumps(cfg, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rrnet.synth.emulator", description=__doc__)
    parser.add_argument("--train", action="store_true", required=True)
    parser.add_argument("--library", type=Path, default=None)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6000)
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
