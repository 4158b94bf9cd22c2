"""The CITab model package: shapes, parameter counts, masking, invariances, routing, losses, variants.

Paper-size checks run on the meta device (shapes and counts without memory or compute); numeric
checks use a small configuration on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from model import build_model, list_variants, variant_config
from model.citab import CITab
from model.header_bank import load_header_bank, save_header_bank
from model.layers import attention_mask, token_padding
from model.losses import itc_loss, itm_labels, sample_hard_negatives
from model.resnet3d import ResNet3D
from model.tabular import PMoLin

torch.set_num_threads(1)

SMALL = dict(resnet_depth=10, resnet_widths=[4, 8, 8, 16], embed_dim=32, num_layers=2, num_heads=4,
             fusion_layers=2, projection_dim=16)
SMALL_IMAGE = (1, 16, 20, 18)
NUM_HEADERS, HEADER_DIM = 12, 24


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def bank() -> torch.Tensor:
    return torch.randn(NUM_HEADERS, HEADER_DIM, generator=torch.Generator().manual_seed(1))


def batch(size: int = 4, columns: int = 6, seed: int = 0, padded_rows: dict[int, int] | None = None):
    """A small random batch; ``padded_rows`` maps row -> number of valid columns (rest padded)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(size, *SMALL_IMAGE, generator=gen)
    values = torch.randn(size, columns, generator=gen)
    col_ids = torch.stack([torch.randperm(NUM_HEADERS, generator=gen)[:columns] for _ in range(size)])
    pad_mask = torch.zeros(size, columns, dtype=torch.bool)
    for row, valid in (padded_rows or {}).items():
        pad_mask[row, valid:] = True
    return image, values, col_ids, pad_mask


# --- paper configuration (meta device) ---------------------------------------------------------


@pytest.fixture(scope="module")
def paper_bank() -> torch.Tensor:
    return torch.empty(42, 768, device="meta")


def paper_model(paper_bank, name: str = "citab", **overrides) -> CITab:
    with torch.device("meta"):
        return build_model(name, paper_bank, **overrides)


def test_paper_parameter_counts(paper_bank):
    pretrain = paper_model(paper_bank)
    assert count(pretrain) == 87_587_394
    assert count(paper_model(paper_bank, stage="finetune")) == 82_800_963
    assert count(pretrain.image_encoder) == 46_155_072
    assert count(pretrain.tabular_encoder) == 22_989_824
    assert count(pretrain.fusion) == 13_654_528
    assert count(pretrain.image_head) == 4_458_624
    assert count(pretrain.tabular_head) == 328_320
    assert count(pretrain.itm_head) == 1_026
    assert count(pretrain.tabular_encoder.layers[0].ffn) == 4_597_120
    for experts, per_layer in ((3, 2_758_272), (4, 3_677_696), (6, 5_516_544)):
        model = paper_model(paper_bank, f"citab_e{experts}")
        assert count(model.tabular_encoder.layers[0].ffn) == per_layer
    assert count(paper_model(paper_bank, "citab_no_pmolin").tabular_encoder) == 13_000_192
    assert count(paper_model(paper_bank, "citab_cross_attention").fusion) == 17_857_024


def test_paper_shapes(paper_bank):
    model = paper_model(paper_bank, hard_negatives="argmax")
    with torch.device("meta"):
        image = torch.empty(2, 1, 160, 208, 176)
        values = torch.empty(2, 21)
        col_ids = torch.zeros(2, 21, dtype=torch.long)
        pad_mask = torch.zeros(2, 21, dtype=torch.bool)
    feature_map = model.image_encoder(image)
    assert feature_map.shape == (2, 2048, 10, 7, 6)
    tabular, routing = model.tabular_encoder(values, col_ids, pad_mask)
    assert tabular.shape == (2, 22, 512)
    assert [r.shape for r in routing] == [(2, 22, 5)] * 4
    assert model.fusion(tabular, feature_map, pad_mask).shape == (2, 442, 512)
    assert model.image_head(feature_map.mean(dim=(2, 3, 4))).shape == (2, 128)
    assert model.tabular_head(tabular[:, 0]).shape == (2, 128)
    out = model.pretrain_losses(image, values, col_ids, pad_mask)
    assert out["itc_logits"].shape == (2, 2) and out["itm_logits"].shape == (6, 2) and out["loss"].shape == ()
    classifier = paper_model(paper_bank, stage="finetune")
    logits, routing = classifier.classify(image, values[:, :14], col_ids[:, :14], return_routing=True)
    assert logits.shape == (2, 3) and routing[0].shape == (2, 15, 5)
    cross = paper_model(paper_bank, "citab_cross_attention")
    assert cross.fusion(tabular, feature_map, pad_mask).shape == (2, 22, 512)


# --- small configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "channels"), [(10, 16), (18, 16), (34, 16), (50, 64)],
)
def test_resnet_depths(depth, channels):
    trunk = ResNet3D(depth=depth, widths=(4, 8, 8, 16))
    assert trunk.out_channels == channels
    # stem stride (1,2,2) then maxpool and three stride-2 stages: /16 on the first axis, /32 on the others
    assert trunk(torch.zeros(1, 1, 32, 64, 64)).shape == (1, channels, 2, 2, 2)
    with pytest.raises(ValueError, match="depth"):
        ResNet3D(depth=101)


def test_small_shapes_and_routing(bank):
    model = build_model("citab", bank, stage="finetune", **SMALL).eval()
    image, values, col_ids, pad_mask = batch(padded_rows={0: 3, 2: 5})
    logits, routing = model.classify(image, values, col_ids, pad_mask, return_routing=True)
    assert logits.shape == (4, 3)
    assert len(routing) == SMALL["num_layers"]
    for weights in routing:
        assert weights.shape == (4, 7, 5)
        assert torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(4, 7))
    assert model.fused_cls(image, values, col_ids, pad_mask).shape == (4, SMALL["embed_dim"])
    assert model.classify(image, values, col_ids).shape == (4, 3)


def test_pmolin_matches_a_loop_over_experts():
    torch.manual_seed(0)
    layer = PMoLin(dim=8, num_experts=3, hidden=5)
    torch.nn.init.normal_(layer.b1)
    torch.nn.init.normal_(layer.b2)
    tokens = torch.randn(2, 4, 8)
    out, routing = layer(tokens)
    gates = torch.softmax(tokens @ layer.prototypes.t(), dim=-1)
    expected = sum(
        gates[..., e:e + 1] * (F.gelu(tokens @ layer.w1[e] + layer.b1[e]) @ layer.w2[e] + layer.b2[e])
        for e in range(3)
    )
    torch.testing.assert_close(routing, gates)
    torch.testing.assert_close(out, expected)


def test_mask_matches_the_official_additive_mask():
    padding = torch.tensor([[False, False, True, True], [False, True, False, False]])
    allowed = attention_mask(padding)[:, 0]
    query, key, value = torch.randn(3, 2, 4, 8).unbind(0)
    additive = torch.where(padding[:, None, :] & ~torch.eye(4, dtype=torch.bool), -1e9, 0.0)
    reference = torch.softmax(query @ key.transpose(1, 2) / math.sqrt(8) + additive, dim=-1) @ value
    result = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed)
    torch.testing.assert_close(result, reference)
    assert torch.equal(token_padding(padding, extra_tokens=2)[0], torch.tensor([False, False, False, True, True, False, False]))
    assert attention_mask(None) is None


def test_padded_input_gives_the_unpadded_cls(bank):
    model = build_model("citab", bank, stage="finetune", **SMALL).eval()
    image, values, col_ids, pad_mask = batch(size=2, columns=6, padded_rows={0: 4, 1: 4})
    # padded cells hold garbage values and ids: the mask must hide them
    values[:, 4:] = 100.0
    with torch.no_grad():
        padded = model.fused_cls(image, values, col_ids, pad_mask)
        unpadded = model.fused_cls(image, values[:, :4], col_ids[:, :4])
        tab_padded = model.tabular_encoder(values, col_ids, pad_mask)[0][:, :5]
        tab_unpadded = model.tabular_encoder(values[:, :4], col_ids[:, :4])[0]
    torch.testing.assert_close(padded, unpadded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tab_padded, tab_unpadded, atol=1e-5, rtol=1e-5)
    # without the mask (ablation) the padding leaks into the CLS
    no_mask = build_model("citab_no_mask", bank, stage="finetune", **SMALL).eval()
    no_mask.load_state_dict(model.state_dict())
    with torch.no_grad():
        leaked = no_mask.fused_cls(image, values, col_ids, pad_mask)
    assert not torch.allclose(leaked, unpadded, atol=1e-4)


def test_column_permutation_leaves_cls_unchanged(bank):
    model = build_model("citab", bank, stage="finetune", **SMALL).eval()
    image, values, col_ids, pad_mask = batch(size=3, columns=6, padded_rows={1: 4})
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        base = model.fused_cls(image, values, col_ids, pad_mask)
        permuted = model.fused_cls(image, values[:, order], col_ids[:, order], pad_mask[:, order])
    torch.testing.assert_close(base, permuted, atol=1e-5, rtol=1e-5)


def test_headers_identify_columns_unless_ablated(bank):
    image, values, col_ids, _ = batch(size=2)
    other_ids = (col_ids + 1) % NUM_HEADERS
    for name, should_change in (("citab", True), ("citab_no_header", False)):
        model = build_model(name, bank, stage="finetune", **SMALL).eval()
        with torch.no_grad():
            changed = not torch.allclose(model.fused_cls(image, values, col_ids), model.fused_cls(image, values, other_ids))
        assert changed == should_change, name


def test_itc_loss_is_symmetric_cross_entropy():
    image_z, tabular_z = torch.randn(2, 5, 7).unbind(0)
    loss, logits = itc_loss(image_z, tabular_z, temperature=0.1)
    expected_logits = F.cosine_similarity(image_z[:, None], tabular_z[None], dim=-1) / 0.1
    torch.testing.assert_close(logits, expected_logits)
    targets = torch.arange(5)
    torch.testing.assert_close(loss, (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2)


@pytest.mark.parametrize("mode", ["sample", "argmax"])
def test_hard_negatives_never_pick_the_positive(mode):
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        size = 2 + trial % 7
        logits = torch.randn(size, size, generator=gen) * 5
        logits.diagonal().add_(50.0)  # a confident model: the positive dominates the softmax
        for picks in sample_hard_negatives(logits, mode, generator=gen):
            assert picks.shape == (size,)
            assert not torch.any(picks == torch.arange(size))
    logits = torch.tensor([[9.0, 1.0, 5.0], [0.0, 9.0, -1.0], [2.0, 3.0, 9.0]])
    tabular_for_image, image_for_tabular = sample_hard_negatives(logits, "argmax")
    assert tabular_for_image.tolist() == [2, 0, 1] and image_for_tabular.tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1))


def test_sampled_negatives_follow_similarity():
    logits = torch.tensor([[0.0, 2.0, 0.0, -2.0]] + [[0.0] * 4] * 3) / 0.5
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(logits, "sample", gen)[0][0] for _ in range(2000)])
    frequency = torch.bincount(draws, minlength=4).float() / 2000
    weights = torch.softmax(logits[0], 0) + 1e-4
    weights[0] = 0
    torch.testing.assert_close(frequency, weights / weights.sum(), atol=0.04, rtol=0)


def test_itm_pairs_positives_and_negatives(bank):
    model = build_model("citab", bank, **SMALL)
    image, values, col_ids, pad_mask = batch(size=5, padded_rows={0: 2, 3: 4})
    out = model.pretrain_losses(image, values, col_ids, pad_mask, generator=torch.Generator().manual_seed(0))
    assert out["itm_logits"].shape == (15, 2)
    assert out["itm_labels"].tolist() == [1] * 5 + [0] * 10
    assert torch.equal(itm_labels(2), torch.tensor([1, 1, 0, 0, 0, 0]))
    torch.testing.assert_close(out["loss"], (out["itc"] + out["itm"]) / 2)


@pytest.mark.parametrize("name", list_variants("citab"))
def test_every_variant_trains_forward_and_backward(bank, name):
    torch.manual_seed(0)
    model = build_model(name, bank, **SMALL)
    image, values, col_ids, pad_mask = batch(padded_rows={1: 4})
    out = model.pretrain_losses(image, values, col_ids, pad_mask)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    config = variant_config(name)
    assert ("itm" in out) == config["use_itm"]
    assert model.tabular_encoder.value_proj.weight.grad is not None
    assert model.image_encoder.stem[0].weight.grad is not None
    assert (model.image_head[0].weight.grad is not None) == config["use_itc"]
    fused_trained = model.fusion.image_proj.weight.grad is not None
    assert fused_trained == config["use_itm"]
    finetune = build_model(name, bank, stage="finetune", **SMALL)
    finetune.load_pretrained_encoders(model.state_dict())
    loss = F.cross_entropy(finetune.classify(image, values, col_ids, pad_mask), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert finetune.fusion.image_proj.weight.grad is not None


def test_experts_are_a_real_parameter(bank):
    for experts in (3, 4, 6):
        model = build_model(f"citab_e{experts}", bank, stage="finetune", **SMALL)
        _, routing = model.classify(*batch(size=2), return_routing=True)
        assert routing[0].shape[-1] == experts
    assert build_model("citab_no_pmolin", bank, stage="finetune", **SMALL).classify(*batch(size=2), return_routing=True)[1] == []


def test_load_pretrained_encoders(bank):
    pretrained = build_model("citab", bank, **SMALL)
    finetune = build_model("citab", bank, stage="finetune", **SMALL)
    report = finetune.load_pretrained_encoders(pretrained.state_dict())
    assert report.missing == ["classifier.bias", "classifier.weight"]
    assert "itm_head.weight" in report.unexpected and "image_head.0.weight" in report.unexpected
    for key, value in pretrained.encoder_state_dict().items():
        assert torch.equal(finetune.state_dict()[key], value), key
    assert "tabular_encoder.header_bank" not in pretrained.state_dict()
    finetune.load_pretrained_encoders(pretrained.encoder_state_dict())
    with pytest.raises(RuntimeError, match="missing encoder weight"):
        finetune.load_pretrained_encoders({k: v for k, v in pretrained.state_dict().items() if "fusion.norm" not in k})
    with pytest.raises(RuntimeError, match="unknown key"):
        finetune.load_pretrained_encoders({**pretrained.state_dict(), "decoder.weight": torch.zeros(1)})
    other = build_model("citab_e3", bank, **SMALL)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        finetune.load_pretrained_encoders(other.state_dict())
    finetune.freeze_encoders()
    assert all(not p.requires_grad for p in finetune.encoder_parameters())
    assert all(p.requires_grad for p in finetune.head_parameters())


def test_stage_guards_and_registry_errors(bank):
    pretrain = build_model("citab", bank, **SMALL)
    with pytest.raises(RuntimeError, match="finetune"):
        pretrain.classify(*batch(size=2))
    with pytest.raises(RuntimeError, match="pretrain"):
        build_model("citab", bank, stage="finetune", **SMALL).pretrain_losses(*batch(size=2))
    with pytest.raises(KeyError, match="unknown model variant"):
        build_model("citab_large", bank)
    with pytest.raises(TypeError, match="unknown setting"):
        build_model("citab", bank, image_tokens=420)
    with pytest.raises(ValueError, match="divisible"):
        build_model("citab", bank, **{**SMALL, "num_heads": 5})
    with pytest.raises(IndexError, match="header bank"):
        pretrain.tabular_encoder(torch.zeros(1, 2), torch.tensor([[0, NUM_HEADERS]]))
    rebuilt = CITab(bank, **pretrain.config)
    assert count(rebuilt) == count(pretrain)


def test_initialisation(bank):
    model = build_model("citab", bank, embed_dim=256, num_heads=8, resnet_depth=10, resnet_widths=[4, 8, 8, 16])
    encoder = model.tabular_encoder
    assert torch.all(encoder.value_proj.bias == 0)
    assert abs(encoder.header_adapter.weight.std().item() - 0.02) < 0.002
    assert abs(encoder.layers[0].ffn.w1.std().item() - 0.02) < 0.002
    bound = math.sqrt(6 / (5 + 256))
    prototypes = encoder.layers[0].ffn.prototypes
    assert prototypes.abs().max() <= bound and prototypes.abs().max() > 0.8 * bound
    assert abs(model.fusion.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
    assert 0.012 < encoder.cls_token.std().item() < 0.028


def test_header_bank_roundtrip(tmp_path):
    vectors = torch.randn(3, 5)
    path = tmp_path / "bank.safetensors"
    save_header_bank(path, vectors, ["Age", "Sex", "MMSE"], encoder="x", encoder_sha256="abc", pooling="mean", max_length=8)
    loaded = load_header_bank(path)
    torch.testing.assert_close(loaded.embeddings, vectors)
    assert loaded.headers == ["Age", "Sex", "MMSE"]
    assert loaded.metadata == {"encoder": "x", "encoder_sha256": "abc", "pooling": "mean", "max_length": 8, "dim": 5}
    assert loaded.column_ids(["MMSE", "Age"]) == [2, 0]
    with pytest.raises(KeyError, match="Education"):
        loaded.column_ids(["Education"])
    with pytest.raises(ValueError, match="distinct"):
        save_header_bank(path, torch.randn(2, 5), ["Age", "Age"], encoder="x", encoder_sha256="a", pooling="mean", max_length=8)


@pytest.mark.parametrize("config_file", ["config.yaml", "config/demo.yaml", "tests/config.tiny.yaml"])
def test_model_config_sections_validate_and_build(config_file, bank):
    from snakemake.utils import validate

    from conftest import REPO

    section = yaml.safe_load((REPO / config_file).read_text())["model"]
    validate(section, str(REPO / "workflow" / "schemas" / "model.schema.yaml"), set_default=True)
    with torch.device("meta"):
        model = build_model("citab", bank.to("meta"), **section)
    assert model.config["embed_dim"] == section["embed_dim"]
