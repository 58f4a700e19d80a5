"""Training on the toy spectral model: learning, NaN masking, resume, reload, OOD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from rrnet.models import ModelConfig, build_model
from rrnet.models.ensemble import Ensemble
from rrnet.models.ood import ood_score, scorer_for_checkpoint
from rrnet.training import CheckpointComplete, TrainSettings, split_by_star, train_arrays
from rrnet.training.toy import TOY_LABELS, toy_spectra

torch.set_num_threads(1)

N_PIX = 320
CONFIG = ModelConfig(net="rrnet", mode="post-RNN", n_pixels=N_PIX, n_subbands=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One small ensemble, trained with 25% of the [Fe/H] labels missing."""
    flux, labels = toy_spectra(700, n_pixels=N_PIX, n_lines=25, snr=80, seed=1)
    labels_nan = labels.copy()
    missing = np.random.default_rng(0).random(labels.shape[0]) < 0.25
    labels_nan[missing, 2] = np.nan
    stars = np.arange(flux.shape[0]) // 2  # two spectra per star
    split = split_by_star(stars, seed=0)
    out = tmp_path_factory.mktemp("ckpt") / "sp"
    settings = TrainSettings(members=3, epochs=5, batch_size=32, lr=1e-3, augment_from=4)
    result = train_arrays(
        flux, labels_nan, split, label_names=TOY_LABELS, model_config=CONFIG,
        settings=settings, out=out, progress=False,
    )  # fmt: skip
    return flux, labels, labels_nan, split, result, out


def test_training_lowers_validation_loss_and_beats_the_mean(trained) -> None:
    _, labels, _, split, result, _ = trained
    hist = pl.DataFrame(result.history)
    per_epoch = hist.group_by("epoch").agg(pl.col("valid_loss").mean()).sort("epoch")
    losses = per_epoch.get_column("valid_loss").to_numpy()
    assert losses.min() < losses[0] - 0.3
    truth = labels[split.test]
    mae = np.mean(np.abs(result.test_mean - truth), axis=0)
    mae_of_mean = np.mean(np.abs(truth - np.nanmean(labels[split.train], axis=0)), axis=0)
    assert np.all(mae < 0.5 * mae_of_mean), (mae, mae_of_mean)
    # [Fe/H] is learnt although a quarter of its labels were missing.
    assert np.all(np.isfinite(result.test_mean)) and np.all(result.test_std > 0)


def test_statistics_come_from_the_training_split_only(trained) -> None:
    flux, _, labels_nan, split, result, _ = trained
    norm = result.normalization
    train = labels_nan[split.train]
    np.testing.assert_allclose(norm.label_mean, np.nanmean(train, axis=0), rtol=1e-10)
    np.testing.assert_allclose(norm.label_std, np.nanstd(train, axis=0), rtol=1e-10)
    clipped = np.clip(flux[split.train].astype(np.float64), -0.5, 2.5)
    np.testing.assert_allclose(norm.flux_mean, clipped.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(norm.flux_std, np.maximum(clipped.std(axis=0), 1e-3), rtol=1e-5)
    everything = np.clip(flux.astype(np.float64), -0.5, 2.5).mean(axis=0)
    assert not np.allclose(norm.flux_mean, everything, atol=1e-7, rtol=0)


def test_best_epoch_members_are_saved_and_reload_identically(trained) -> None:
    flux, _, _, split, _result, out = trained
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["status"] == "complete"
    assert config["n_members"] == 3 and config["labels"] == list(TOY_LABELS)
    hist = pl.read_parquet(out / "history.parquet")
    assert hist.height == 5 * 3
    for m in range(3):  # the saved member is the one of its best validation epoch
        rows = hist.filter(pl.col("member") == m)
        best = rows.sort("valid_loss").row(0, named=True)
        assert config["training"]["best_epoch"][m] == best["epoch"]
    # Independent oracle: each member as a plain network, combined by method §4, paper eq. 3.
    pred = pl.read_parquet(out / "test_predictions.parquet")
    norm = load_file(str(out / "normalization.safetensors"))
    x = torch.from_numpy(flux[split.test]).clamp(-0.5, 2.5)
    x = (x - norm["flux_mean"]) / norm["flux_std"]
    mus, vars_ = [], []
    for m in range(3):
        model = build_model(CONFIG).eval()
        model.load_state_dict(load_file(str(out / f"member-{m}.safetensors")))
        with torch.no_grad():
            mu, var = model(x)
        mus.append(mu.double())
        vars_.append(var.double())
    mu, var = torch.stack(mus), torch.stack(vars_)
    mean = mu.mean(0)
    total = (var + mu**2).mean(0) - mean**2
    scale, offset = norm["label_std"].double(), norm["label_mean"].double()
    expected = (mean * scale + offset).numpy()
    expected_err = (total.sqrt() * scale).numpy()
    for j, name in enumerate(TOY_LABELS):
        np.testing.assert_allclose(pred.get_column(name).to_numpy(), expected[:, j], rtol=1e-4)
        np.testing.assert_allclose(
            pred.get_column(f"{name}_err").to_numpy(), expected_err[:, j], rtol=1e-3
        )
    # ... and the inference ensemble gives the same numbers from the checkpoint.
    ens = Ensemble.from_checkpoint(out, device="cpu").predict(flux[split.test])
    np.testing.assert_allclose(ens.mean, expected, rtol=1e-4)
    np.testing.assert_allclose(ens.std, expected_err, rtol=1e-3)


def test_ood_reference_from_the_training_split(trained) -> None:
    flux, _, _, split, result, out = trained
    norm = result.normalization
    scores = ood_score(flux[split.train], norm.flux_mean, norm.flux_std)
    # By construction (mean/std of that split), the mean score is 1 (std floor aside).
    assert abs(scores.mean() - 1.0) < 1e-3
    score, limit = scorer_for_checkpoint(out, quantile=0.99)
    assert limit == pytest.approx(np.quantile(scores, 0.99), rel=1e-6)
    weird, _ = toy_spectra(20, n_pixels=N_PIX, n_lines=25, snr=5, seed=9)  # very noisy
    assert np.all(score(weird) > limit)
    assert np.mean(score(flux[split.test]) > limit) < 0.1


def test_masked_labels_change_nothing_for_the_present_labels() -> None:
    """The loss of a batch with NaN labels is the mean over the present entries only."""
    from rrnet.training.vectorize import MemberStack

    stack = MemberStack(ModelConfig(n_pixels=N_PIX, n_subbands=8, dropout=0.0), [0, 1])
    x = torch.randn(2, 6, N_PIX)
    y = torch.randn(2, 6, 3)
    y_nan = y.clone()
    y_nan[0, 1, 2] = y_nan[1, 4, 0] = y_nan[1, 5, 1] = float("nan")
    with torch.no_grad():
        mu, var = stack.forward(x, train=False)
        loss = stack.loss_fn()(x, y_nan)
    present = ~torch.isnan(y_nan)
    terms = 0.5 * torch.log(var) + (y - mu) ** 2 / (2 * var)
    for m in range(2):
        expected = terms[m][present[m]].mean()
        torch.testing.assert_close(loss[m], expected)
    # the gradient is finite and does not depend on what the missing values "were"
    grads = []
    for fill in (0.0, 1e6):
        stack_m = MemberStack(ModelConfig(n_pixels=N_PIX, n_subbands=8, dropout=0.0), [0, 1])
        y_fill = torch.where(present, y, torch.full_like(y, fill))
        stack_m.loss_fn()(x, torch.where(present, y_fill, torch.nan)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in stack_m.parameters()]))
    assert torch.isfinite(grads[0]).all()
    torch.testing.assert_close(grads[0], grads[1], atol=0, rtol=0)


def _small_run(out: Path, **kwargs):
    flux, labels = toy_spectra(160, n_pixels=N_PIX, n_lines=25, seed=2)
    split = split_by_star(np.arange(160), seed=3)
    settings = TrainSettings(members=2, epochs=3, batch_size=32, augment_from=2, seed=11)
    return train_arrays(
        flux, labels, split, label_names=TOY_LABELS, model_config=CONFIG, settings=settings,
        out=out, progress=False, **kwargs,
    )  # fmt: skip


def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    full = _small_run(tmp_path / "full")
    for stop in (1, 2):
        out = tmp_path / f"killed{stop}"
        part = _small_run(out, stop_after_epoch=stop)
        assert not part.completed
        state = torch.load(out / "train_state.pt", weights_only=True)  # safe loader
        assert state["epoch"] == stop
        resumed = _small_run(out, resume=True)
        # the wall time counts the killed part too (it held the resumed part's alone)
        wall = json.loads((out / "config.json").read_text())["training"]["wall_time_s"]
        assert 0 < state["elapsed_s"] < wall
        timing = ("train_time_s", "epoch_time_s", "spectra_per_s")
        strip = [{k: v for k, v in r.items() if k not in timing} for r in full.history]
        assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == strip
        for m in range(2):
            a = load_file(str(tmp_path / "full" / f"member-{m}.safetensors"))
            b = load_file(str(out / f"member-{m}.safetensors"))
            assert all(torch.equal(a[k], b[k]) for k in a)
        np.testing.assert_array_equal(full.test_mean, resumed.test_mean)
        assert not (out / "train_state.pt").exists()
    with pytest.raises(CheckpointComplete):
        _small_run(tmp_path / "full", resume=True)
    # more epochs asked of a finished checkpoint: refused, not "nothing to do" (exit 0)
    flux, labels = toy_spectra(160, n_pixels=N_PIX, n_lines=25, seed=2)
    longer = TrainSettings(members=2, epochs=4, batch_size=32, augment_from=2, seed=11)
    before = (tmp_path / "full" / "config.json").read_bytes()
    with pytest.raises(ValueError, match="complete with epochs 3, not 4") as err:
        train_arrays(
            flux, labels, split_by_star(np.arange(160), seed=3), label_names=TOY_LABELS,
            model_config=CONFIG, settings=longer, out=tmp_path / "full", resume=True,
            progress=False,
        )  # fmt: skip
    assert not isinstance(err.value, CheckpointComplete)
    assert (tmp_path / "full" / "config.json").read_bytes() == before


def test_the_checkpoint_names_the_label_values_it_was_trained_on(tmp_path: Path) -> None:
    """config.json had the labels table's path only; its values are now digested."""
    import hashlib

    flux, labels = toy_spectra(160, n_pixels=N_PIX, n_lines=25, seed=2)
    settings = TrainSettings(members=1, epochs=1, batch_size=32, seed=11)
    digests = []
    for k, values in enumerate((labels, np.where(np.arange(160)[:, None] == 7, 0.5, labels))):
        train_arrays(
            flux, values, split_by_star(np.arange(160), seed=3), label_names=TOY_LABELS,
            model_config=CONFIG, settings=settings, out=tmp_path / str(k), progress=False,
        )  # fmt: skip
        config = json.loads((tmp_path / str(k) / "config.json").read_text())
        digests.append(config["training"]["label_values_digest"])
        want = hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        assert digests[-1] == want.hexdigest()[:16]
    assert digests[0] != digests[1]


def test_refuses_to_overwrite_and_to_resume_with_other_settings(tmp_path: Path) -> None:
    _small_run(tmp_path / "a", stop_after_epoch=1)
    with pytest.raises(FileExistsError):
        _small_run(tmp_path / "a")
    flux, labels = toy_spectra(160, n_pixels=N_PIX, n_lines=25, seed=2)
    split = split_by_star(np.arange(160), seed=3)
    other = TrainSettings(members=2, epochs=3, batch_size=32, augment_from=2, seed=12)
    with pytest.raises(ValueError, match="settings"):
        train_arrays(
            flux, labels, split, label_names=TOY_LABELS, model_config=CONFIG, settings=other,
            out=tmp_path / "a", resume=True, progress=False,
        )  # fmt: skip


def test_resume_refuses_changed_label_values(tmp_path: Path) -> None:
    """A labels table edited between the kill and the --resume (same rows, same split)
    would train on new values scaled by the old statistics: refused."""
    _small_run(tmp_path / "a", stop_after_epoch=1)
    flux, labels = toy_spectra(160, n_pixels=N_PIX, n_lines=25, seed=2)
    split = split_by_star(np.arange(160), seed=3)
    settings = TrainSettings(members=2, epochs=3, batch_size=32, augment_from=2, seed=11)
    changed = labels.copy()
    changed[:, 0] /= 1000.0  # Teff in kK
    with pytest.raises(ValueError, match="labels differ"):
        train_arrays(
            flux, changed, split, label_names=TOY_LABELS, model_config=CONFIG,
            settings=settings, out=tmp_path / "a", resume=True, progress=False,
        )  # fmt: skip
    missing = labels.copy()
    missing[0, 2] = np.nan  # a label now missing is a change
    state = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    from rrnet.training.loop import labels_digest

    assert labels_digest(labels) == state["label_values"]
    assert labels_digest(missing) != labels_digest(labels)
    nan_a, nan_b = labels.copy(), labels.copy()
    nan_a[0, 2], nan_b[0, 2] = np.nan, -np.nan
    assert labels_digest(nan_a) == labels_digest(nan_b)
    assert _small_run(tmp_path / "a", resume=True).completed  # the same labels resume


def test_a_stop_between_the_epochs_files_leaves_a_resumable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state is written before the checkpoint files: a kill between the two (here a
    failure of the checkpoint write) leaves a folder that --resume continues."""
    from rrnet.training import loop

    def fail(run):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(loop, "_write_best", fail)
        with pytest.raises(KeyboardInterrupt):
            _small_run(tmp_path / "a")
    assert (tmp_path / "a" / "train_state.pt").is_file()
    assert not (tmp_path / "a" / "config.json").exists()
    full = _small_run(tmp_path / "full")
    resumed = _small_run(tmp_path / "a", resume=True)
    np.testing.assert_array_equal(full.test_mean, resumed.test_mean)


class _ShardedRows:
    """Flux rows as a store adapter presents them (duck type of StreamedRows): training
    then streams them in the by-shard order, as with ``ram_limit_gb`` too small."""

    buffer = 64

    def __init__(self, flux: np.ndarray) -> None:
        self.flux, self.shape = flux, flux.shape

    def shard_of(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx) // 40

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return self.flux[np.asarray(idx)]


def test_resume_refuses_a_switch_between_in_memory_and_streamed_flux(tmp_path: Path) -> None:
    """--ram-limit-gb decides whether flux is read into memory (full permutation) or
    streamed (by-shard order); resuming across the switch would change the sample
    order, so it is refused with a message naming the setting."""
    flux, labels = toy_spectra(160, n_pixels=N_PIX, n_lines=25, seed=2)
    split = split_by_star(np.arange(160), seed=3)
    settings = TrainSettings(members=2, epochs=2, batch_size=32, augment_from=2, seed=11)

    def run(source, out: Path, **kwargs):
        return train_arrays(
            source, labels, split, label_names=TOY_LABELS, model_config=CONFIG,
            settings=settings, out=out, progress=False, **kwargs,
        )  # fmt: skip

    run(_ShardedRows(flux), tmp_path / "streamed", stop_after_epoch=1)
    run(flux, tmp_path / "memory", stop_after_epoch=1)
    with pytest.raises(ValueError, match=r"streamed from the store.*--ram-limit-gb"):
        run(flux, tmp_path / "streamed", resume=True)
    with pytest.raises(ValueError, match=r"read into memory.*--ram-limit-gb"):
        run(_ShardedRows(flux), tmp_path / "memory", resume=True)
    # the same kind resumes, and continues exactly as the uninterrupted streamed run
    resumed = run(_ShardedRows(flux), tmp_path / "streamed", resume=True)
    full = run(_ShardedRows(flux), tmp_path / "full")
    np.testing.assert_array_equal(resumed.test_mean, full.test_mean)


def test_cpu_training_keeps_freed_memory_for_reuse(tmp_path: Path, monkeypatch) -> None:
    """The CPU epochs run with utils.heap.retain_heap in effect (no page faults of fresh
    big tensors per step); its effect on malloc is tested in tests/utils/test_heap.py."""
    import rrnet.training.loop as loop

    calls: list[str] = []
    monkeypatch.setattr(loop, "retain_heap", lambda: calls.append("retain") or True)
    real = loop._train_epoch
    monkeypatch.setattr(loop, "_train_epoch", lambda *a: (calls.append("epoch"), real(*a))[1])
    _small_run(tmp_path / "run")
    assert calls[:2] == ["retain", "epoch"]


def test_inference_warns_of_a_checkpoint_whose_training_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A training stopped after epoch 1 of 3 (Ctrl-C in a notebook) left a checkpoint
    that rrnet.infer used without a word, its rows recommended: now a warning names the
    epochs and the remedy (and the finished run gives none)."""
    import logging

    from rrnet.inference.models import load_checkpoints
    from rrnet.inference.streaming import warn_checkpoint_caveats

    _small_run(tmp_path / "a", stop_after_epoch=1)
    (stopped,) = load_checkpoints([tmp_path / "a"], device="cpu")
    with caplog.at_level(logging.WARNING):
        warn_checkpoint_caveats([stopped], calibrate=False)
    said = [r.getMessage() for r in caplog.records if "training stopped" in r.getMessage()]
    assert len(said) == 1 and "after epoch 1 of 3" in said[0] and "--resume" in said[0]
    _small_run(tmp_path / "a", resume=True)
    (finished,) = load_checkpoints([tmp_path / "a"], device="cpu")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_checkpoint_caveats([finished], calibrate=False)
    assert not any("training stopped" in r.getMessage() for r in caplog.records)


def test_a_batch_log_shows_progress_within_each_epoch(capsys) -> None:
    """Off a terminal the training printed one line per epoch and nothing between (an
    epoch of a survey-sized set is hours on a CPU); each epoch's batches are now counted
    like every command's work, ending with the epoch's last batch."""
    flux, labels = toy_spectra(96, n_pixels=N_PIX, n_lines=25, snr=80, seed=5)
    split = split_by_star(np.arange(96), seed=0)
    settings = TrainSettings(members=1, epochs=2, batch_size=16, lr=1e-3, augment_from=9)
    train_arrays(flux, labels, split, label_names=TOY_LABELS, model_config=CONFIG,
                 settings=settings, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    n = -(-split.train.size // 16)
    for epoch in (1, 2):
        assert f"rrnet-train: epoch {epoch}/2: {n}/{n} batches (100.0%)" in err
