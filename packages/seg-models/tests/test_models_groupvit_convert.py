"""GroupViT converters against the real ``transformers.GroupViTModel`` (a port of the official code): image and
text embeddings and segmentation logits must match to float tolerance, from the transformers format, from the
official ``.pth`` layout (built here from the transformers weights by the inverse of transformers' conversion
script), from a ``save_pretrained`` folder and from the Hub cache."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from seg_core import ConfigError
from seg_models.groupvit import (
    GroupViT,
    convert_official_groupvit,
    convert_transformers_groupvit,
    load_groupvit,
    pixel_group_map,
)

transformers = pytest.importorskip("transformers")

TEXT = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 1}
VISION = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "depths": [2, 2],
    "num_hidden_layers": 4,
    "num_group_tokens": [8, 0],
    "num_output_groups": [8, 4],
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 8,
}
# The official text transformer has width // 64 heads: one for this 64-wide tower, so one model serves both formats.
OFFICIAL_CFG = {"img_encoder": {"num_heads": [4, 4], "depths": [2, 2]}, "text_encoder": {"width": 64}}


@pytest.fixture(scope="module")
def hf_model() -> Any:
    torch.manual_seed(0)
    config = transformers.GroupViTConfig(
        text_config=TEXT, vision_config=VISION, projection_dim=32, projection_intermediate_dim=64
    )
    model = transformers.GroupViTModel(config).eval()
    with torch.no_grad():  # random everything (fresh positional embeddings and group tokens are zeros)
        for name, parameter in model.named_parameters():
            is_norm_weight = "norm" in name and name.endswith("weight")
            parameter.copy_(torch.randn_like(parameter) * 0.2 + (1.0 if is_norm_weight else 0.0))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
        model.logit_scale.fill_(2.0)
    return model


@pytest.fixture(scope="module")
def converted(hf_model: Any) -> GroupViT:
    config, state_dict = convert_transformers_groupvit(hf_model.state_dict(), hf_model.config.to_dict())
    model = GroupViT(config)
    model.load_state_dict(state_dict)
    return model.eval()


def _inputs(model: GroupViT) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return images, model.tokenize(["a photo of a cat.", "a dog", "grass and sky"])


def _assert_matches_transformers(model: GroupViT, hf_model: Any) -> None:
    images, ids = _inputs(model)
    with torch.no_grad():
        reference = hf_model(input_ids=ids, pixel_values=images, output_segmentation=True)
        image_emb, text_emb, _ = model(images, ids)
        _, group_emb, vision = model.encode_image_and_groups(images)
        # transformers' segmentation_logits: per-group logits (scale · cos) spread over the soft pixel-to-group map,
        # times the (unclamped) scale once more.
        scale = model.logit_scale.exp()
        group_logits = torch.einsum("bgd,td->btg", F.normalize(group_emb, dim=-1), text_emb) * scale
        grouping = pixel_group_map(vision.assignments(), vision.grid, (64, 64))
        segmentation = torch.einsum("btg,bghw->bthw", group_logits, grouping) * scale
    torch.testing.assert_close(image_emb, reference.image_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_emb, reference.text_embeds, atol=1e-5, rtol=1e-5)
    assert segmentation.shape == reference.segmentation_logits.shape == (2, 3, 64, 64)
    torch.testing.assert_close(segmentation, reference.segmentation_logits, atol=1e-4, rtol=1e-5)


def test_transformers_conversion_matches_embeddings_and_segmentation(hf_model: Any, converted: GroupViT) -> None:
    config = converted.config
    assert (config.vision.depths, config.vision.num_group_tokens, config.vision.num_output_groups) == (
        (2, 2),
        (8, 0),
        (8,),
    )
    assert (config.projection_dim, config.projection_hidden_dim, config.text.heads) == (32, 64, 1)
    _assert_matches_transformers(converted, hf_model)


def test_positional_interpolation_matches_transformers_at_another_size(hf_model: Any, converted: GroupViT) -> None:
    images = torch.randn(1, 3, 80, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        vision_model = hf_model.vision_model
        embedded = vision_model.embeddings(images, interpolate_pos_encoding=True)
        tokens = vision_model.layernorm(vision_model.encoder(embedded, return_dict=True).last_hidden_state)
        expected = hf_model.visual_projection(tokens.mean(dim=1))
        actual = converted.encode_image(images)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


# --- the official layout ---------------------------------------------------------------------------------------

_GROUPING_TO_OFFICIAL = {"pre_assign_attn.attn.out_proj": "pre_assign_attn.attn.proj"}


def _official_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official key layout, built from transformers keys by inverting transformers'
    ``convert_groupvit_nvlab_to_hf.py`` (fused qkv / in_proj rows, 1×1 Conv1d projector weights)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in hf_state.items():
        if key == "text_model.embeddings.position_ids":
            continue
        if match := re.fullmatch(r"vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", key):
            stage, layer, rest = match.groups()
            prefix = f"img_encoder.layers.{stage}.blocks.{layer}."
            if part := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                fused.setdefault(prefix + f"attn.qkv.{part.group(2)}", {})[part.group(1)] = value
                continue
            rest = rest.replace("self_attn.out_proj", "attn.proj").replace("layer_norm", "norm")
            out[prefix + rest] = value
        elif match := re.fullmatch(r"vision_model\.encoder\.stages\.(\d+)\.(.+)", key):
            stage, rest = match.groups()
            for ours, theirs in _GROUPING_TO_OFFICIAL.items():
                rest = rest.replace(ours, theirs)
            out[f"img_encoder.layers.{stage}.{rest}"] = value
        elif match := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            layer, rest = match.groups()
            prefix = f"text_encoder.transformer.resblocks.{layer}."
            if part := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                fused.setdefault(prefix + f"attn.in_proj_{part.group(2)}", {})[part.group(1)] = value
                continue
            rest = rest.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
            rest = rest.replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
            out[prefix + rest] = value
        else:
            simple = {
                "vision_model.embeddings.position_embeddings": "img_encoder.pos_embed",
                "text_model.embeddings.token_embedding.weight": "text_encoder.token_embedding.weight",
                "text_model.embeddings.position_embedding.weight": "text_encoder.positional_embedding",
                "logit_scale": "logit_scale",
            }
            if key in simple:
                out[simple[key]] = value
                continue
            name = key.replace("vision_model.embeddings.patch_embeddings.projection", "img_encoder.patch_embed.proj")
            name = name.replace("vision_model.embeddings.layernorm", "img_encoder.patch_embed.norm")
            name = name.replace("vision_model.layernorm", "img_encoder.norm")
            name = name.replace("text_model.final_layer_norm", "text_encoder.ln_final")
            for hf_name, official in (("visual_projection", "img_projector"), ("text_projection", "text_projector")):
                name = name.replace(f"{hf_name}.0.", f"{official}.linear_hidden.0.")
                name = name.replace(f"{hf_name}.1.", f"{official}.linear_hidden.1.")
                name = name.replace(f"{hf_name}.3.", f"{official}.linear_out.")
            conv_weight = name.endswith("weight") and ("linear_hidden.0" in name or "linear_out" in name)
            assert name != key, key
            out[name] = value[..., None] if conv_weight else value  # Conv1d(kernel_size=1) weight [out, in, 1]
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def test_official_conversion_matches_transformers(hf_model: Any) -> None:
    official = _official_state_dict(hf_model.state_dict())
    assert "img_encoder.layers.0.blocks.1.attn.qkv.weight" in official
    assert official["img_projector.linear_out.weight"].ndim == 3
    official["multi_label_logit_scale"] = torch.tensor(2.0)  # training-only; dropped
    ddp = {f"module.{key}": value for key, value in official.items()}
    config, state_dict = convert_official_groupvit(ddp, OFFICIAL_CFG)
    assert (config.vision.num_heads, config.text.heads, config.vision.drop_path_rate) == (4, 1, 0.1)
    model = GroupViT(config)
    model.load_state_dict(state_dict)
    _assert_matches_transformers(model.eval(), hf_model)


def test_official_conversion_refusals(hf_model: Any) -> None:
    official = _official_state_dict(hf_model.state_dict())
    with pytest.raises(ConfigError, match=r"official_cfg\.img_encoder\.depths"):
        convert_official_groupvit(official, {"img_encoder": {"num_heads": 4, "depths": [6, 3, 3]}})
    with pytest.raises(ConfigError, match="num_heads"):  # the default 6 heads do not divide 64
        convert_official_groupvit(official)
    with pytest.raises(ConfigError, match=r"img_encoder\.extra_thing"):
        convert_official_groupvit({**official, "img_encoder.extra_thing": torch.zeros(1)}, OFFICIAL_CFG)
    with pytest.raises(ConfigError, match="lacks"):
        convert_official_groupvit({"logit_scale": torch.zeros(())})


def test_transformers_conversion_refusals(hf_model: Any) -> None:
    state = hf_model.state_dict()
    config = hf_model.config.to_dict()
    with pytest.raises(ConfigError, match="unknown_module"):
        convert_transformers_groupvit({**state, "unknown_module.weight": torch.zeros(1)}, config)
    wrong = json.loads(json.dumps(config))
    wrong["vision_config"]["depths"] = [3, 1]
    with pytest.raises(ConfigError, match="does not match"):
        convert_transformers_groupvit(state, wrong)
    wrong["vision_config"]["depths"] = [2, 2]
    wrong["vision_config"]["num_group_tokens"] = [8, 4]
    with pytest.raises(ConfigError, match=r"vision_config\.num_group_tokens"):
        convert_transformers_groupvit(state, wrong)


# --- loading ---------------------------------------------------------------------------------------------------


def test_load_from_a_save_pretrained_folder_and_the_hub_cache(hf_model: Any, tmp_path: Path) -> None:
    folder = tmp_path / "pretrained"
    hf_model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    _assert_matches_transformers(load_groupvit(folder), hf_model)

    # A Hub cache seeded by hand (refs/main -> snapshot), read with local_files_only: no network.
    repo = tmp_path / "hub" / "models--testorg--groupvit-tiny"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    loaded = load_groupvit("hf-hub:testorg/groupvit-tiny", cache_dir=tmp_path / "hub", local_files_only=True)
    assert loaded.identity == "groupvit:hf-hub:testorg/groupvit-tiny"
    _assert_matches_transformers(loaded, hf_model)

    # Older repositories hold pytorch_model.bin instead of model.safetensors (loaded with weights_only=True).
    old_snapshot = tmp_path / "hub" / "models--testorg--groupvit-old" / "snapshots" / commit
    old_snapshot.mkdir(parents=True)
    (old_snapshot.parent.parent / "refs").mkdir()
    (old_snapshot.parent.parent / "refs" / "main").write_text(commit)
    (old_snapshot / "config.json").write_bytes((folder / "config.json").read_bytes())
    torch.save(hf_model.state_dict(), old_snapshot / "pytorch_model.bin")
    old = load_groupvit("hf-hub:testorg/groupvit-old", cache_dir=tmp_path / "hub", local_files_only=True)
    _assert_matches_transformers(old, hf_model)


def test_load_official_pth_needs_an_explicit_pickle_opt_in(hf_model: Any, tmp_path: Path) -> None:
    official = _official_state_dict(hf_model.state_dict())
    plain = tmp_path / "plain.pth"
    torch.save({"model": official}, plain)
    _assert_matches_transformers(load_groupvit(plain, official_cfg=OFFICIAL_CFG), hf_model)

    # Like the released files: tensors plus other pickled objects, and the trainer's config with its model section.
    pickled = tmp_path / "released.pth"
    torch.save({"model": official, "config": {"model": OFFICIAL_CFG}, "amp": types.SimpleNamespace(x=1)}, pickled)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_groupvit(pickled)
    _assert_matches_transformers(load_groupvit(pickled, trust_pickle=True), hf_model)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="hf-hub"):
        load_groupvit(tmp_path / "weights.bin")
