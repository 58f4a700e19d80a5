"""The Rust grouped conv1d of the training path (``rrnet.training.conv``) against
``F.conv1d`` and torch.autograd at random shapes: forward, input gradient, weight and
bias gradients, with and without the fused ReLU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rrnet.training import conv

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def shapes(draw) -> dict:
    """A grouped convolution within the kernel's limit (ceil(k / stride) <= MAX_TAPS)."""
    stride = draw(st.integers(1, 3))
    kernel = draw(st.integers(1, conv.MAX_TAPS * stride))
    pad = draw(st.integers(0, 3))
    return {
        "batch": draw(st.integers(1, 3)),
        "groups": draw(st.integers(1, 4)),
        "c_in": draw(st.integers(1, 5)),
        "c_out": draw(st.integers(1, 9)),
        "length": draw(st.integers(max(1, kernel - 2 * pad), 70)),
        "kernel": kernel,
        "stride": stride,
        "pad": pad,
        "bias": draw(st.booleans()),
        "relu": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _both(s: dict) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Output and gradients (x, w, b) of the Rust path and of torch's, same inputs."""
    gen = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(s["batch"], s["groups"] * s["c_in"], s["length"], generator=gen)
    w = torch.randn(s["groups"] * s["c_out"], s["c_in"], s["kernel"], generator=gen)
    b = torch.randn(s["groups"] * s["c_out"], generator=gen) if s["bias"] else None
    kw = {"stride": s["stride"], "padding": s["pad"], "groups": s["groups"]}
    out = []
    for rust in (True, False):
        leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
        xb, wb, bb = leaves[0], leaves[1], leaves[2] if b is not None else None
        if rust:
            y = conv._RustConv1d.apply(xb, wb, bb, s["stride"], s["pad"], s["groups"], s["relu"])
        else:
            y = F.conv1d(xb, wb, bb, **kw)
            y = F.relu(y) if s["relu"] else y
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(s["seed"] + 1))
        y.backward(gy)
        out.append([y.detach(), *(t.grad for t in leaves)])
    return out[0], out[1]


@SETTINGS
@given(shapes())
@example(  # padding beyond the input and kernel together, as torch allows
    {"batch": 1, "groups": 1, "c_in": 1, "c_out": 1, "length": 1, "kernel": 1, "stride": 1,
     "pad": 3, "bias": False, "relu": False, "seed": 0}
)  # fmt: skip
def test_forward_and_gradients_match_torch(s: dict) -> None:
    rust, ref = _both(s)
    assert len(rust) == len(ref)
    for name, got, want in zip(("y", "gx", "gw", "gb"), rust, ref, strict=False):
        assert got is not None and want is not None
        scale = 1e-5 * (1.0 + want.abs().max().item())
        torch.testing.assert_close(got, want, atol=scale, rtol=1e-4, msg=name)


def test_the_training_shapes_use_the_kernel_and_match() -> None:
    """The three convolutions of a grouped RRNet block (6 members) on real-size rows."""
    for kernel, stride, pad, c_in in ((3, 1, 1, 4), (4, 2, 1, 4), (2, 2, 0, 1)):
        s = {"batch": 2, "groups": 6, "c_in": c_in, "c_out": 4, "length": 7200,
             "kernel": kernel, "stride": stride, "pad": pad, "bias": True, "relu": stride == 1,
             "seed": kernel}  # fmt: skip
        rust, ref = _both(s)
        for got, want in zip(rust, ref, strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_frozen_inputs_get_no_gradient_and_other_cases_fall_back() -> None:
    x = torch.randn(2, 3, 20)
    w = torch.randn(6, 1, 3, requires_grad=True)
    y = conv.conv1d(x, w, None, padding=1, groups=3)
    assert y.grad_fn is not None and "Rust" in type(y.grad_fn).__name__
    y.sum().backward()
    assert x.grad is None and w.grad is not None
    # float64, or more taps per phase than the kernel has: F.conv1d
    y64 = conv.conv1d(x.double(), w.detach().double(), None, padding=1, groups=3)
    torch.testing.assert_close(y64, F.conv1d(x.double(), w.detach().double(), padding=1, groups=3))
    w9 = torch.randn(6, 1, 9, requires_grad=True)
    y9 = conv.conv1d(x, w9, None, padding=4, groups=3)
    assert "Rust" not in type(y9.grad_fn).__name__


def test_bad_shapes_are_value_errors() -> None:
    from rrnet import _core

    x, w, out = torch.zeros(1, 4, 10), torch.zeros(4, 3, 3), torch.zeros(1, 4, 10)
    with pytest.raises(ValueError, match="groups"):
        _core.conv1d_forward(x.numpy(), w.numpy(), None, out.numpy(), 1, 1, 1, False, False)
    # A padding near usize's range panicked (PanicException is no Exception): ValueError.
    w = torch.zeros(4, 4, 3)
    with pytest.raises(ValueError, match="padding too large"):  # 2 * pad overflows
        _core.conv1d_forward(x.numpy(), w.numpy(), None, out.numpy(), 1, 2**63, 1, False, False)
    with pytest.raises(ValueError, match="sizes too large"):
        _core.conv1d_forward(x.numpy(), w.numpy(), None, out.numpy(), 1, 2**62, 1, False, False)
    # An output that is also the input panicked in numpy's borrow check: TypeError.
    for call in (
        lambda a: _core.conv1d_forward(a, w.numpy(), None, a, 1, 1, 1, False, False),
        lambda a: _core.conv1d_grad_input(a, None, w.numpy(), a, 1, 1, 1),
        lambda a: _core.conv1d_grad_weight(a, a, None, a, None, 1, 1, 1),  # gw is gy
    ):
        a = torch.zeros(4, 4, 3).numpy()
        with pytest.raises(TypeError, match="already borrowed"):
            call(a)


@SETTINGS
@given(shapes(), st.integers(1, 3), st.booleans())
def test_sum_of_two_convolutions_matches_torch(s: dict, c_x: int, need_x: bool) -> None:
    """``conv1d_sum`` (a residual block's output: the shortcut convolution's output
    accumulated in the kernel, ReLU fused) against the plain F.conv1d sum."""
    gen = torch.Generator().manual_seed(s["seed"])
    g, k, st_, pad = s["groups"], s["kernel"], s["stride"], s["pad"]
    a = torch.randn(s["batch"], g * s["c_in"], s["length"], generator=gen)
    wa = torch.randn(g * s["c_out"], s["c_in"], k, generator=gen)
    b = torch.randn(g * s["c_out"], generator=gen)
    l_out = (s["length"] + 2 * pad - k) // st_ + 1
    x = torch.randn(s["batch"], g * c_x, l_out * st_, generator=gen)  # stride st_, k = st_
    wx = torch.randn(g * s["c_out"], c_x, st_, generator=gen)
    results = []
    for rust in (True, False):
        leaves = [
            t.clone().requires_grad_(need_x or i != 3) for i, t in enumerate((a, wa, b, x, wx))
        ]
        conf = {"conf_a": (st_, pad, g), "conf_x": (st_, 0, g), "relu": s["relu"]}
        if rust:
            y = conv._RustConvSum.apply(*leaves, conf["conf_a"], conf["conf_x"], s["relu"])
        else:
            y = F.conv1d(leaves[0], leaves[1], leaves[2], stride=st_, padding=pad, groups=g)
            y = y + F.conv1d(leaves[3], leaves[4], stride=st_, groups=g)
            y = F.relu(y) if s["relu"] else y
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
        results.append([y.detach(), *(t.grad for t in leaves)])
    for got, want in zip(*results, strict=True):
        if want is None:
            assert got is None
            continue
        torch.testing.assert_close(got, want, atol=1e-5 * (1 + want.abs().max().item()), rtol=1e-4)
