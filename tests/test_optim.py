"""BertAdam against hand-computed numbers: no bias correction, per-parameter clipping, decoupled decay."""

import copy
import math

import pytest
import torch

from kdqat import KdqatError
from kdqat.optim import BertAdam, optimizer_cls_and_kwargs

LR, WD, EPS = 0.1, 0.01, 1e-6


def two_steps(grads_w, grads_b):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    opt = BertAdam([{"params": [w], "weight_decay": WD}, {"params": [b], "weight_decay": 0.0}], lr=LR)
    seen = []
    for gw, gb in zip(grads_w, grads_b):
        w.grad = torch.tensor(gw, dtype=torch.float64)
        b.grad = torch.tensor(gb, dtype=torch.float64)
        opt.step()
        seen.append((w.detach().clone(), b.detach().clone()))
    return seen


def test_two_steps_match_the_hand_computed_update():
    (w1, b1), (w2, b2) = two_steps([[3.0, 4.0], [0.3, -0.4]], [[0.2], [0.2]])

    # step 1: w's gradient has norm 5 and is clipped to norm 1 on its own (torch's clip: 1 / (5 + 1e-6))
    c = 1.0 / (5.0 + 1e-6)
    g = [3.0 * c, 4.0 * c]
    m = [0.1 * x for x in g]
    v = [0.001 * x * x for x in g]
    # no bias correction: the first update is m / sqrt(v) = 0.1 / sqrt(0.001) = 3.162..., not 1 as in AdamW
    upd = [mi / (math.sqrt(vi) + EPS) + WD * p for mi, vi, p in zip(m, v, [1.0, -2.0])]
    expect_w1 = [p - LR * u for p, u in zip([1.0, -2.0], upd)]
    assert w1.tolist() == pytest.approx(expect_w1, abs=1e-12)
    assert w1[0].item() == pytest.approx(1.0 - LR * (3.16227766 + 0.01), abs=1e-4)  # eps moves it by 2e-5

    # the bias: norm 0.2 < 1, not clipped; no weight decay in its group
    mb, vb = 0.1 * 0.2, 0.001 * 0.04
    expect_b1 = 0.5 - LR * mb / (math.sqrt(vb) + EPS)
    assert b1.item() == pytest.approx(expect_b1, abs=1e-12)

    # step 2: gradient norm 0.5, not clipped; plain EMAs continue, decay uses the current weight
    g2 = [0.3, -0.4]
    m2 = [0.9 * mi + 0.1 * gi for mi, gi in zip(m, g2)]
    v2 = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g2)]
    upd2 = [mi / (math.sqrt(vi) + EPS) + WD * p for mi, vi, p in zip(m2, v2, expect_w1)]
    expect_w2 = [p - LR * u for p, u in zip(expect_w1, upd2)]
    assert w2.tolist() == pytest.approx(expect_w2, abs=1e-12)
    mb2, vb2 = 0.9 * mb + 0.1 * 0.2, 0.999 * vb + 0.001 * 0.04
    assert b2.item() == pytest.approx(expect_b1 - LR * mb2 / (math.sqrt(vb2) + EPS), abs=1e-12)


def test_clipping_is_per_parameter_not_global():
    """A huge gradient on one tensor does not shrink another tensor's step (a global clip would)."""
    (_, b_alone), = two_steps([[0.0, 0.0]], [[0.2]])
    (_, b_beside_huge), = two_steps([[3000.0, 4000.0]], [[0.2]])
    assert b_beside_huge.item() == b_alone.item()


def test_state_dict_round_trip_resumes_identically():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = BertAdam([p], lr=0.01, weight_decay=0.01)
    p.grad = torch.tensor([0.5, -0.5])
    opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    resumed = BertAdam([q], lr=0.01, weight_decay=0.01)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as saved to and read from optimizer.pt
    for param, o in ((p, opt), (q, resumed)):
        param.grad = torch.tensor([0.1, 0.2])
        o.step()
    assert torch.equal(p, q)


def test_factory_names():
    cls, kwargs = optimizer_cls_and_kwargs("bertadam", 3e-5)
    assert cls is BertAdam and kwargs == {"lr": 3e-5, "max_grad_norm": 1.0}
    assert optimizer_cls_and_kwargs("adamw", 3e-5) is None  # the Trainer's own AdamW
    with pytest.raises(KdqatError, match="--optimizer 'sgd' is not one of bertadam, adamw"):
        optimizer_cls_and_kwargs("sgd", 3e-5)
