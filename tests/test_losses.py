import math

import pytest
import torch

from kdqat import KdqatError
from kdqat.losses import (
    att_loss,
    loss_weights,
    map_loss,
    output_loss,
    pred_loss,
    rep_loss,
)


def test_pred_loss_is_soft_cross_entropy():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 0.0]])
    # teacher probs (0.5, 0.5); -0.5 log(e/(e+1)) - 0.5 log(1/(e+1))
    expected = -0.5 * math.log(math.e / (math.e + 1)) - 0.5 * math.log(1 / (math.e + 1))
    assert pred_loss(s, t).item() == pytest.approx(expected)
    assert pred_loss(torch.tensor([[2.0]]), torch.tensor([[0.5]]), regression=True).item() == pytest.approx(2.25)


def test_map_loss_is_zero_for_equal_maps_and_ignores_padding():
    probs = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert map_loss([probs], [probs], mask).item() == pytest.approx(0.0, abs=1e-7)
    student = probs.clone()
    student[1, :, 3:, :] = torch.softmax(torch.randn(3, 2, 5), -1)  # padded query rows
    assert map_loss([student], [probs], mask).item() == pytest.approx(0.0, abs=1e-7)


def test_map_loss_hand_computed():
    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # B=1, H=1, S=2
    s = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    mask = torch.ones(1, 2)
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    row1 = 1.0 * math.log(1.0 / 0.5)
    # summed over rows, divided by the length 2, summed over the 2 layers
    assert map_loss([s, s], [t, t], mask).item() == pytest.approx(2 * (row0 + row1) / 2)


def test_att_loss_masks_padding_pairs():
    t = torch.zeros(1, 1, 3, 3)
    s = torch.zeros(1, 1, 3, 3)
    s[0, 0, 0, 1] = 2.0  # valid pair
    s[0, 0, 2, :] = 100.0  # padded query
    mask = torch.tensor([[1, 1, 0]])
    assert att_loss([s], [t], mask).item() == pytest.approx(4.0 / 4)  # one pair of 4 valid, squared error 4


def test_token_losses_average_per_sentence_and_ignore_padding():
    t = torch.zeros(2, 3, 2)
    s = torch.zeros(2, 3, 2)
    s[0] = 1.0  # sentence 0: all 3 tokens off by 1 -> mse 1
    s[1, 0] = 2.0  # sentence 1: one real token off by 2 (mse 4), padding garbage ignored
    s[1, 2] = 50.0
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # sentence 1: (4 + 0) / 2 tokens = 2; batch mean (1 + 2) / 2 = 1.5; two hidden states sum to 3
    assert rep_loss([s, s], [t, t], mask).item() == pytest.approx(3.0)
    assert output_loss([s], [t], mask).item() == pytest.approx(1.5)


def test_layer_count_mismatch_is_an_error():
    x = torch.zeros(1, 2, 2)
    with pytest.raises(KdqatError, match="same depth"):
        output_loss([x, x], [x], torch.ones(1, 2))


def test_presets_and_unified_form():
    assert loss_weights("ternarybert") == {"pred": 1.0, "rep": 1.0, "att": 1.0}
    assert loss_weights("map+output") == {"pred": 1.0, "rep": 1.0, "map": 1.0, "output": 1.0}
    assert loss_weights(gamma=0.3, gamma_on="output") == {"pred": 1.0, "rep": 1.0, "map": 1.0, "output": 0.3}
    assert loss_weights(gamma=0.7, gamma_on="map")["map"] == 0.7
    with pytest.raises(KdqatError, match="--kd"):
        loss_weights("minilm")
    with pytest.raises(KdqatError, match="--gamma-on"):
        loss_weights(gamma=0.5)
    with pytest.raises(KdqatError, match=r"\[0, 1\]"):
        loss_weights(gamma=1.5, gamma_on="map")


def test_map_loss_gradient_matches_the_plain_kl_formula():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    additive = (1.0 - mask.float())[:, None, None, :] * -1e9
    t = torch.softmax(torch.randn(2, 2, 4, 4) + additive, -1)
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    map_loss([torch.softmax(x + additive, -1)], [t], mask).backward()
    x_ref = x.detach().clone().requires_grad_(True)
    s = torch.softmax(x_ref + additive, -1)
    pairs = mask.float()[:, None, :, None] * mask.float()[:, None, None, :]
    kl = (torch.xlogy(t, t) - t * torch.log(s.clamp_min(1e-12))) * pairs
    (kl.sum((-1, -2)) / mask.sum(-1)[:, None]).mean().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    assert x.grad.abs().sum() > 0
