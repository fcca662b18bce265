import pytest
import torch
from conftest import batch, tiny_classifier

from kdqat import KdqatError, QuantConfig, load_student, prepare, save_student
from kdqat.capture import capture
from kdqat.student import act_quantizers


def test_bits_32_equals_the_float_model():
    ids, mask = batch()
    reference = tiny_classifier()(input_ids=ids, attention_mask=mask).logits
    model = prepare(tiny_classifier(), QuantConfig.for_bits(32, 32))
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, reference, rtol=0, atol=1e-6)


def test_quantizers_sit_where_the_method_puts_them():
    model = prepare(tiny_classifier(), QuantConfig())
    names = set(act_quantizers(model))
    layer = "bert.encoder.layer.0"
    for linear in ("attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense", "intermediate.dense", "output.dense"):
        assert f"{layer}.{linear}.input_quantizer" in names
    for bmm in ("q_bmm", "k_bmm", "p_bmm", "v_bmm"):
        assert f"{layer}.attention.self.{bmm}" in names
    assert "bert.pooler.dense.input_quantizer" in names
    # 2 layers x (6 linears + 4 bmm) + pooler; the classifier input stays in float
    assert len(names) == 2 * 10 + 1
    assert not hasattr(model.classifier, "input_quantizer")
    assert hasattr(model.bert.embeddings.word_embeddings, "weight_quantizer")
    assert not hasattr(model.bert.embeddings.position_embeddings, "weight_quantizer")


def test_padding_does_not_change_real_tokens():
    model = prepare(tiny_classifier(), QuantConfig(act_scale="dynamic"))
    ids, mask = batch(batch_size=1, pad_last=0, length=6)
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)], 1)
    with capture(model) as internals:
        model(input_ids=padded_ids, attention_mask=padded_mask)
    assert internals.probs[0][0, :, :, 6:].abs().max() == 0  # no attention to padding


def test_capture_records_every_layer():
    model = prepare(tiny_classifier(), QuantConfig(act_scale="dynamic"))
    ids, mask = batch()
    with capture(model) as internals:
        model(input_ids=ids, attention_mask=mask)
    assert len(internals.scores) == len(internals.probs) == len(internals.attn_outputs) == 2
    assert internals.probs[0].shape == (3, 4, 9, 9)
    torch.testing.assert_close(internals.probs[1].sum(-1), torch.ones(3, 4, 9))
    # the attention output is post-LayerNorm: zero mean over features
    torch.testing.assert_close(internals.attn_outputs[0].mean(-1), torch.zeros(3, 9), atol=1e-5, rtol=0)


def test_save_and_load_student_round_trip(tmp_path):
    model = prepare(tiny_classifier(), QuantConfig())
    ids, mask = batch()
    model.train()
    model(input_ids=ids, attention_mask=mask)  # learn static scales
    model.eval()
    expected = model(input_ids=ids, attention_mask=mask).logits
    save_student(model, tmp_path / "student")
    loaded = load_student(tmp_path / "student")
    assert loaded.kdqat_quant_config == QuantConfig()
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, expected, rtol=0, atol=0)


def test_load_student_errors(tmp_path):
    with pytest.raises(KdqatError, match="no such student folder"):
        load_student(tmp_path / "missing")
    tiny_classifier().save_pretrained(tmp_path / "plain")
    with pytest.raises(KdqatError, match="not a kdqat student"):
        load_student(tmp_path / "plain")
    (tmp_path / "plain" / "quant_config.json").write_text("{not json")
    with pytest.raises(KdqatError, match="not valid JSON"):
        load_student(tmp_path / "plain")


def test_prepare_twice_is_refused():
    model = prepare(tiny_classifier(), QuantConfig())
    with pytest.raises(KdqatError, match="already prepared"):
        prepare(model, QuantConfig())
