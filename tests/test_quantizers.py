import pytest
import torch

from kdqat import KdqatError, QuantConfig
from kdqat.modules import QuantEmbedding, QuantLinear
from kdqat.quantizers import ActQuantizer, WeightQuantizer, ternary_codes_and_scale


def test_ternary_matches_hand_computed_example():
    w = torch.tensor([[0.9, -0.1, 0.05], [-0.6, 0.3, -3.0]])
    # clip: -3.0 -> -2.5; mean|w| = (0.9+0.1+0.05+0.6+0.3+2.5)/6 = 0.75833; delta = 0.53083
    # kept: 0.9, -0.6, -2.5 -> alpha = (0.9+0.6+2.5)/3 = 1.33333
    out = WeightQuantizer(QuantConfig())(w)
    a = 4.0 / 3.0
    expected = torch.tensor([[a, 0.0, 0.0], [-a, 0.0, -a]])
    torch.testing.assert_close(out, expected)


def test_ternary_codes_are_exactly_three_levels():
    w = torch.randn(64, 48)
    codes, alpha = WeightQuantizer(QuantConfig()).codes_and_scale(w)
    assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert alpha.numel() == 1
    torch.testing.assert_close(WeightQuantizer(QuantConfig())(w), codes * alpha)


def test_per_row_scales_for_embeddings():
    w = torch.tensor([[1.0, -1.0, 0.1, 0.0], [0.2, 0.4, -0.4, 0.0]])
    codes, alpha = ternary_codes_and_scale(w, per_row=True)
    # row 0: mean|w| = 0.525, delta 0.3675 -> keep +-1 -> alpha 1; row 1: mean 0.25, delta 0.175 -> keep 0.2, 0.4, -0.4
    torch.testing.assert_close(alpha, torch.tensor([[1.0], [1.0 / 3.0]]))
    torch.testing.assert_close(codes, torch.tensor([[1.0, -1.0, 0.0, 0.0], [1.0, 1.0, -1.0, 0.0]]))


def test_per_channel_linear_has_one_ternary_scale_per_output_channel():
    linear = QuantLinear.from_linear(torch.nn.Linear(4, 2, bias=False), QuantConfig(weight_scale="channel"))
    with torch.no_grad():  # nn.Linear stores [out, in]: row 0 is output channel 0
        linear.weight.copy_(torch.tensor([[1.0, -1.0, 0.1, 0.0], [0.2, 0.4, -0.4, 0.0]]))
    codes, alpha = linear.weight_quantizer.codes_and_scale(linear.weight)
    # channel 0: mean|w| 0.525, delta 0.3675 -> +-1, alpha 1; channel 1: mean 0.25, delta 0.175 -> alpha 1/3
    torch.testing.assert_close(alpha, torch.tensor([[1.0], [1.0 / 3.0]]))
    torch.testing.assert_close(codes, torch.tensor([[1.0, -1.0, 0.0, 0.0], [1.0, 1.0, -1.0, 0.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    linear.input_quantizer.mode = "dynamic"
    xq = linear.input_quantizer(x)
    torch.testing.assert_close(linear(x), xq @ (codes * alpha).t())
    per_tensor = QuantLinear.from_linear(linear, QuantConfig())
    assert per_tensor.weight_quantizer.codes_and_scale(linear.weight)[1].numel() == 1


def test_embedding_quantizes_rows_like_the_whole_matrix():
    emb = torch.nn.Embedding(10, 6)
    q = QuantEmbedding.from_embedding(emb, QuantConfig())
    ids = torch.tensor([[3, 1, 3], [9, 0, 2]])
    codes, alpha = ternary_codes_and_scale(emb.weight.detach().clamp(-2.5, 2.5), per_row=True)
    torch.testing.assert_close(q(ids), (codes * alpha)[ids])


def test_weight_straight_through_gradient_is_masked_outside_clip():
    w = torch.tensor([0.5, -3.0, 2.0, 2.6], requires_grad=True)
    WeightQuantizer(QuantConfig())(w).backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(w.grad, torch.tensor([1.0, 0.0, 3.0, 0.0]))


@pytest.mark.parametrize("bits", [4, 8])
def test_uniform_weights_use_the_integer_grid(bits):
    w = torch.randn(20, 10)
    quantizer = WeightQuantizer(QuantConfig.for_bits(bits))
    codes, step = quantizer.codes_and_scale(w)
    qmax = 2 ** (bits - 1) - 1
    assert codes.abs().max() == qmax
    assert torch.equal(codes, codes.round())
    torch.testing.assert_close(step.reshape(()), w.abs().max().clamp(max=2.5) / qmax)


def test_activation_dynamic_matches_reference_formula():
    x = torch.tensor([0.1, -1.0, 3.0, 0.333])
    q = ActQuantizer(QuantConfig(act_scale="dynamic"))
    s = 127 / 2.5  # max|clip(x)| = 2.5
    expected = torch.round(x.clamp(-2.5, 2.5) * s) / s
    torch.testing.assert_close(q(x), expected)


def test_activation_static_scale_is_learned_then_frozen():
    q = ActQuantizer(QuantConfig(act_scale="static", ema_momentum=0.5))
    with pytest.raises(KdqatError, match="not calibrated"):
        q.eval()(torch.ones(3))
    q.train()
    q(torch.tensor([1.0, -0.5]))  # first batch initialises amax = 1.0
    q(torch.tensor([0.2, 2.0]))  # EMA: 0.5 * 1.0 + 0.5 * 2.0
    assert q.amax.item() == pytest.approx(1.5)
    q.eval()
    q(torch.tensor([2.4]))  # eval does not move the scale
    assert q.amax.item() == pytest.approx(1.5)
    step = 1.5 / 127  # QuantizeLinear -> DequantizeLinear, zero point 0
    x = torch.tensor([0.7, 2.0, -2.0])
    torch.testing.assert_close(q(x), torch.tensor([round(0.7 / step), 127, -128]) * step)


def test_static_scale_saturates_and_stops_gradient_beyond_amax():
    q = ActQuantizer(QuantConfig(act_scale="static"))
    q.train()(torch.tensor([1.0]))
    x = torch.tensor([0.5, 2.0], requires_grad=True)
    out = q.eval()(x)
    assert out[1].item() == pytest.approx(1.0)  # 2.0 saturates at code 127 (= amax), like QuantizeLinear
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 0.0]))


def test_static_gradient_uses_the_range_of_its_own_forward_pass():
    q = ActQuantizer(QuantConfig(act_scale="static", ema_momentum=0.0)).train()
    q(torch.tensor([1.0]))  # amax = 1.0
    x = torch.tensor([0.5, 1.5], requires_grad=True)
    out = q(x)  # momentum 0: amax becomes 1.5 during this call, the mask is taken after the update
    q(torch.tensor([0.25]))  # the next batch moves amax to 0.25 before the backward runs
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.0]))


def test_activation_gradient_is_straight_through_inside_clip():
    x = torch.tensor([0.3, -2.6, 1.7], requires_grad=True)
    ActQuantizer(QuantConfig(act_scale="dynamic"))(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 0.0, 1.0]))


def test_quant_linear_shares_parameters_and_quantizes_both_inputs():
    lin = torch.nn.Linear(8, 4)
    q = QuantLinear.from_linear(lin, QuantConfig(act_scale="dynamic"))
    assert q.weight is lin.weight and q.bias is lin.bias
    x = torch.randn(2, 8)
    expected = torch.nn.functional.linear(q.input_quantizer(x), q.weight_quantizer(lin.weight), lin.bias)
    torch.testing.assert_close(q(x), expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weight_bits=3), "weight_bits=3"),
        (dict(weight_bits=2, weight_scheme="uniform"), "does not fit"),
        (dict(act_bits=4), "act_bits=4"),
        (dict(act_scale="minmax"), "act_scale"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(KdqatError, match=message):
        QuantConfig(**kwargs)
