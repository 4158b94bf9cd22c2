"""The Table 1 supervised baselines: parameter counts, defining properties, overfitting, registry, TableSpec.

Paper-size counts and shapes run on the meta device; numeric checks use the tiny end-to-end
configuration (tests/config.tiny.yaml: model sizes and image shape) on CPU.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import REPO, TINY_CONFIG
from model import CITab, TableSpec, build_model, list_variants, variant_config, variant_info
from model.baselines.hyperfusion import generated_pointwise_conv, tabular_input
from model.resnet3d import BasicBlock3D, Bottleneck3D

torch.set_num_threads(1)

BASELINES = ["concat", "cross_attention", "daft", "hyperfusion", "resnet50", "transformer"]
EXPECTED_INPUTS = {
    "resnet50": ("image",),
    "transformer": ("values", "missing"),
    "concat": ("image", "values"),
    "daft": ("image", "values"),
    "cross_attention": ("image", "values", "missing"),
    "hyperfusion": ("image", "values", "missing"),
}
_tiny = yaml.safe_load(TINY_CONFIG.read_text())
TINY = _tiny["model"]  # resnet_depth 10, widths 4/8/8/16, embed_dim 32, 1 layer, 4 heads (+ CITab-only keys)
TINY_IMAGE = tuple(_tiny["pretrain"]["image_shape"])  # (24, 28, 24)
PAPER = yaml.safe_load((REPO / "config.yaml").read_text())["model"]
# 14 columns like ADNI's, two of them categorical (cardinalities 2 and 3)
TABLE = TableSpec(tuple(f"column_{j}" for j in range(14)), (0, 2, 0, 3) + (0,) * 10)
ADNI_CONTINUOUS = TableSpec(tuple(f"column_{j}" for j in range(14)), (0,) * 14)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_rows(size: int, seed: int = 0, table: TableSpec = TABLE):
    """Random image [B,1,*TINY_IMAGE], values/missing [B,C] (codes in categorical cells, ~10% missing), labels."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(size, 1, *TINY_IMAGE, generator=gen)
    values = torch.randn(size, table.num_columns, generator=gen)
    for column, cardinality in enumerate(table.cardinalities):
        if cardinality:
            values[:, column] = torch.randint(0, cardinality, (size,), generator=gen).float()
    missing = torch.rand(size, table.num_columns, generator=gen) < 0.1
    missing[0, :3] = True  # at least a few missing cells whatever the draw
    values[missing] = 0.0
    labels = torch.randint(0, 3, (size,), generator=gen)
    return {"image": image, "values": values, "missing": missing}, labels


def inputs_for(model, batch: dict) -> list[torch.Tensor]:
    return [batch[name] for name in model.input_names]


def tiny_model(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(name, table=TABLE, stage="finetune", **{**TINY, **extra})


# --- paper configuration (meta device) ---------------------------------------------------------


def paper_model(name: str, table: TableSpec = ADNI_CONTINUOUS):
    with torch.device("meta"):
        # the pipeline's model section as it is: each baseline picks the keys it takes
        return build_model(name, table=table, stage="finetune", **PAPER)


def test_paper_parameter_counts():
    assert count(paper_model("resnet50")) == 46_161_219
    assert count(paper_model("transformer")) == 12_615_683
    assert count(paper_model("concat")) == 46_434_115
    daft = paper_model("daft")
    assert count(daft) == 47_976_061
    assert count(daft.daft.aux) == 1_814_842
    hyperfusion = paper_model("hyperfusion")
    assert count(hyperfusion) == 3_853_820  # n_tab = 28 (values and missing flags of 14 columns)
    generators = hyperfusion.hypernetwork.weight_generator, hyperfusion.hypernetwork.bias_generator
    assert sum(count(g) for g in generators) == 297_216


@pytest.mark.parametrize("cardinalities", [(0,) * 14, (0, 2, 0, 3) + (0,) * 10, (4,) * 3 + (0,) * 4])
def test_transformer_count_formula(cardinalities):
    table = TableSpec(tuple(f"c{j}" for j in range(len(cardinalities))), cardinalities)
    expected = 12_606_464 + 512 * (table.num_columns + 1) + 512 * sum(cardinalities) + 512 * 3 + 3
    assert count(paper_model("transformer", table)) == expected


def test_paper_shapes_and_attention_maps():
    with torch.device("meta"):
        image = torch.empty(2, 1, 160, 208, 176)
        values, missing = torch.empty(2, 14), torch.zeros(2, 14, dtype=torch.bool)
    batch = {"image": image, "values": values, "missing": missing}
    for name in BASELINES:
        model = paper_model(name)
        assert model.classify(*inputs_for(model, batch)).shape == (2, 3), name
    logits, maps = paper_model("cross_attention").classify(image, values, missing, return_attention=True)
    assert len(maps) == 2
    assert maps[0].tabular_to_image.shape == (2, 8, 15, 420)
    assert maps[0].image_to_tabular.shape == (2, 8, 420, 15)
    hyperfusion = paper_model("hyperfusion")
    before = hyperfusion.blocks(hyperfusion.stem(image))
    assert before.shape == (2, 128, 20, 26, 22)
    weight, bias = hyperfusion.hypernetwork(tabular_input(values, missing))
    assert hyperfusion.hyper_block(before, weight, bias).shape == (2, 256, 10, 13, 11)
    assert paper_model("daft").features_before_daft(image).shape == (2, 2048, 10, 7, 6)


# --- defining properties (tiny configuration, eval mode) ----------------------------------------


def test_image_only_ignores_the_table():
    model = tiny_model("resnet50").eval()
    batch, _ = make_rows(3)
    other, _ = make_rows(3, seed=1)
    with torch.no_grad():
        logits = model.classify(batch["image"])
        assert not torch.allclose(logits, model.classify(other["image"]))
    with pytest.raises(TypeError):
        model.classify(batch["image"], batch["values"])


def test_tabular_only_ignores_the_image_and_missing_cells_but_not_column_order():
    model = tiny_model("transformer").eval()
    batch, _ = make_rows(4)
    values, missing = batch["values"], batch["missing"]
    with torch.no_grad():
        logits = model.classify(values, missing)
        garbage = values.clone()
        garbage[missing] = 7.0  # any value in a missing cell (categorical ones included) is ignored
        torch.testing.assert_close(model.classify(garbage, missing), logits)
        # the flag itself matters: unmasking a cell changes the output
        assert not torch.allclose(model.classify(values, torch.zeros_like(missing)), logits)
        # position-bound: swapping two continuous columns changes the logits
        order = torch.tensor([0, 1, 2, 3, 5, 4] + list(range(6, 14)))
        assert not torch.allclose(model.classify(values[:, order], missing[:, order]), logits, atol=1e-4)
    assert "image" not in model.input_names


def test_concat_logits_split_into_image_and_table_parts():
    model = tiny_model("concat").eval()
    rows, _ = make_rows(2)
    image_1, image_2 = rows["image"][:1], rows["image"][1:]
    table_1, table_2 = rows["values"][:1], rows["values"][1:]
    with torch.no_grad():
        first = model.classify(image_1, table_1) - model.classify(image_1, table_2)
        second = model.classify(image_2, table_1) - model.classify(image_2, table_2)
    assert first.abs().max() > 1e-3
    torch.testing.assert_close(first, second, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("depth", "block_kind"), [(10, BasicBlock3D), (50, Bottleneck3D)])
def test_daft_modulates_only_the_replaced_block(depth, block_kind):
    model = tiny_model("daft", resnet_depth=depth).eval()
    # the last block of the last stage is gone from the trunk, the others stay
    expected_kept = 0 if depth == 10 else 2
    assert len(model.image_encoder.layer4) == expected_kept
    assert all(isinstance(block, block_kind) for block in model.image_encoder.layer4)
    batch, _ = make_rows(2)
    other_values = batch["values"] + torch.randn(2, 14)
    seen = []
    hook = model.daft.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    with torch.no_grad():
        logits = model.classify(batch["image"], batch["values"])
        other = model.classify(batch["image"], other_values)
    hook.remove()
    assert not torch.allclose(logits, other)
    torch.testing.assert_close(seen[0], seen[1])  # the trunk before the DAFT block never sees the table
    torch.testing.assert_close(seen[0], model.features_before_daft(batch["image"]).detach())
    # identity transform: scale 1, shift 0 whatever the input
    last = model.daft.aux[-1]
    with torch.no_grad():
        last.weight.zero_()
        channels = last.out_features // 2
        last.bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels)]))
        torch.testing.assert_close(
            model.classify(batch["image"], batch["values"]), model.classify(batch["image"], other_values)
        )


def test_cross_attention_maps_and_missing_cells():
    model = tiny_model("cross_attention").eval()
    batch, _ = make_rows(3)
    values, missing = batch["values"], batch["missing"]
    with torch.no_grad():
        logits, maps = model.classify(batch["image"], values, missing, return_attention=True)
        image_tokens = maps[0].tabular_to_image.shape[-1]
        assert len(maps) == 2
        for block in maps:
            assert block.tabular_to_image.shape == (3, TINY["num_heads"], 15, image_tokens)
            assert block.image_to_tabular.shape == (3, TINY["num_heads"], image_tokens, 15)
            torch.testing.assert_close(block.image_to_tabular.sum(-1), torch.ones(3, TINY["num_heads"], image_tokens))
            # image queries give no weight to a missing column (token j + 1; CLS is token 0)
            column_weights = block.image_to_tabular[..., 1:]
            assert torch.all(column_weights[missing[:, None, None, :].expand_as(column_weights)] == 0)
        garbage = values.clone()
        garbage[missing] = -5.0
        torch.testing.assert_close(model.classify(batch["image"], garbage, missing), logits)
        assert not torch.allclose(model.classify(batch["image"], values, torch.zeros_like(missing)), logits)


def test_generated_conv_matches_a_loop_over_samples():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, 7, generator=gen)
    weight, bias = torch.randn(3, 6, 4, generator=gen), torch.randn(3, 6, generator=gen)
    grouped = generated_pointwise_conv(x, weight, bias, stride=2)
    loop = torch.cat([F.conv3d(x[b:b + 1], weight[b, :, :, None, None, None], bias[b], stride=2) for b in range(3)])
    torch.testing.assert_close(grouped, loop)


def test_hyperfusion_with_one_table_row_is_a_plain_network():
    model = tiny_model("hyperfusion").eval()
    batch, _ = make_rows(3)
    values = batch["values"][:1].expand(3, -1)
    missing = batch["missing"][:1].expand(3, -1)
    with torch.no_grad():
        logits = model.classify(batch["image"], values, missing)
        weight, bias = model.hypernetwork(tabular_input(values[:1], missing[:1]))
        block = model.hyper_block
        plain_shortcut = torch.nn.Conv3d(model.hypernetwork.in_channels, model.hypernetwork.out_channels, 1,
                                         stride=block.stride)
        plain_shortcut.weight.copy_(weight[0, :, :, None, None, None])
        plain_shortcut.bias.copy_(bias[0])
        x = model.blocks(model.stem(batch["image"]))
        x = block.branch(x) + block.shortcut_norm(plain_shortcut(x))
        torch.testing.assert_close(model.head(x.mean(dim=(2, 3, 4))), logits, atol=1e-5, rtol=1e-4)
        # and another table row gives other logits
        assert not torch.allclose(model.classify(batch["image"], batch["values"], batch["missing"]), logits)


def test_hyperfusion_prepare_sets_the_generator_init_and_the_embedding():
    model = tiny_model("hyperfusion")
    rows, labels = make_rows(40, seed=3)
    values, missing = rows["values"], rows["missing"]
    before = model.hypernetwork.embedding[0].weight.clone()
    rng_state = torch.get_rng_state()
    report = model.prepare_from_training_rows(values, missing, labels, epochs=30, lr=1e-2, seed=1,
                                              class_weights=[1.0, 0.7, 1.9])
    assert torch.equal(torch.get_rng_state(), rng_state)  # the stage draws from its own generators
    table_rows = torch.cat([values, missing.float()], dim=1)
    variance = table_rows.var(dim=1, unbiased=False).mean().item()
    assert report["input_variance"] == pytest.approx(variance, rel=1e-5)
    assert model.input_variance.item() == pytest.approx(variance, rel=1e-5)
    generator = model.hypernetwork.weight_generator
    bound = (3.0 / (model.hypernetwork.in_channels * 8 * variance)) ** 0.5  # fan-in C_in times embedding width 8
    assert generator.weight.abs().max() <= bound and generator.weight.abs().max() > 0.95 * bound
    bias_bound = (3.0 / (8 * variance)) ** 0.5
    assert model.hypernetwork.bias_generator.weight.abs().max() <= bias_bound
    assert torch.all(generator.bias == 0) and torch.all(model.hypernetwork.bias_generator.bias == 0)
    assert not torch.equal(model.hypernetwork.embedding[0].weight, before)
    assert model.hypernetwork.embedding[1].running_mean.abs().sum() > 0  # BN statistics came along
    assert report["prior_accuracy"] > 0.5  # 40 random rows, 14 + 14 features: the MLP fits most of them
    again = tiny_model("hyperfusion")
    again.prepare_from_training_rows(values, missing, labels, epochs=30, lr=1e-2, seed=1, class_weights=[1.0, 0.7, 1.9])
    torch.testing.assert_close(again.hypernetwork.embedding[0].weight, model.hypernetwork.embedding[0].weight)


# --- every baseline fits 16 rows -----------------------------------------------------------------

# Adam learning rate and full-batch steps per model; HyperFusion without its dropout (0.6 before
# the head makes a 16-row fit noisy in a few steps; the architecture is what is tested here).
OVERFIT = {
    "resnet50": (3e-3, 30, {}),
    "transformer": (3e-3, 60, {}),
    "concat": (3e-3, 30, {}),
    "daft": (3e-3, 30, {}),
    "cross_attention": (3e-3, 30, {}),
    "hyperfusion": (3e-3, 20, {"block_dropout": [0.0] * 4, "head_dropout": [0.0, 0.0]}),
}


@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_overfits_16_rows(name):
    lr, steps, extra = OVERFIT[name]
    model = tiny_model(name, **extra).train()
    batch, labels = make_rows(16)
    inputs = inputs_for(model, batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(model.classify(*inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # training accuracy as a training loop sees it (train mode, batch statistics)
        accuracy = (model.classify(*inputs).argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95, f"{name}: training accuracy {accuracy:.2f} after {steps} steps (loss {loss.item():.3f})"


# --- registry and interface ------------------------------------------------------------------------


def test_registry_lists_the_baselines_and_their_interface():
    assert list_variants("supervised") == BASELINES
    assert set(BASELINES) < set(list_variants())
    assert "citab" in list_variants("citab") and not set(BASELINES) & set(list_variants("citab"))
    citab = variant_info("citab")
    assert citab.family == "citab" and citab.pretrains_across_tables and citab.model_class is CITab
    assert citab.input_names == CITab.input_names == ("image", "values", "col_ids", "pad_mask")
    batch, _ = make_rows(2)
    for name in BASELINES:
        info = variant_info(name)
        assert info.family == "supervised" and not info.pretrains_across_tables, name
        assert info.input_names == EXPECTED_INPUTS[name], name
        model = tiny_model(name)
        assert isinstance(model, info.model_class) and model.stage == "finetune"
        assert model.input_names == EXPECTED_INPUTS[name]
        # the config is JSON and rebuilds the same architecture
        config = json.loads(json.dumps(model.config))
        rebuilt = build_model(name, table=TABLE, **config)
        rebuilt.load_state_dict(model.state_dict())
        assert count(rebuilt) == count(model)
        assert set(variant_config(name)) == set(config)
    with pytest.raises(ValueError, match="family"):
        list_variants("ssl")


def test_registry_errors():
    with pytest.raises(TypeError, match="unknown setting.*valid"):
        build_model("concat", table=TABLE, image_tokens=420)
    with pytest.raises(TypeError, match="unknown setting"):
        build_model("citab", torch.zeros(3, 4), base_filters=8)  # CITab keeps its own strict keys
    with pytest.raises(ValueError, match="from scratch per cohort"):
        build_model("daft", table=TABLE, stage="pretrain", **TINY)
    with pytest.raises(TypeError, match="TableSpec"):
        build_model("transformer", **TINY)
    with pytest.raises(TypeError, match="header_bank"):
        build_model("citab", table=TABLE)
    with pytest.raises(KeyError, match="unknown model variant"):
        variant_info("not_a_variant")
    # keys of other models are ignored: HyperFusion takes no ResNet or transformer sizes
    assert build_model("hyperfusion", table=TABLE, embed_dim=7, resnet_depth=34).config["base_filters"] == 16


def test_tabular_embedding_checks_codes_and_width():
    model = tiny_model("transformer")
    batch, _ = make_rows(2)
    bad = batch["values"].clone()
    bad[1, 3], batch["missing"][1, 3] = 3.0, False  # column 3 has 3 levels: codes 0..2
    with pytest.raises(ValueError, match="integer codes"):
        model.classify(bad, batch["missing"])
    with pytest.raises(ValueError, match=r"\[B, 14\]"):
        model.classify(batch["values"][:, :7], batch["missing"][:, :7])


# --- TableSpec -------------------------------------------------------------------------------------


def test_table_spec_from_the_real_columns_file():
    from workflow.columns import cohort_columns

    raw = yaml.safe_load((REPO / "config" / "columns.yaml").read_text())["cohorts"]["ADNI"]["columns"]
    for columns in (raw, cohort_columns(REPO / "config" / "columns.yaml", "ADNI")):
        table = TableSpec.from_columns(columns)
        assert table.num_columns == 14
        assert dict(zip(table.column_names, table.cardinalities)) == {
            name: {"sex": 2, "apoe4": 3}.get(name, 0) for name in table.column_names
        }
        assert table.column_names[:2] == ("age", "sex")
    spec = TableSpec.from_columns([
        {"name": "a", "type": "continuous"},
        {"name": "b", "type": "categorical", "levels": {"x": 0, "y": 4}},  # unused codes still count
    ])
    assert spec.cardinalities == (0, 5) and spec.num_categories == 5
    assert TableSpec(**json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="distinct"):
        TableSpec(("a", "a"), (0, 0))
    with pytest.raises(ValueError, match="type"):
        TableSpec.from_columns([{"name": "a", "type": "ordinal"}])
