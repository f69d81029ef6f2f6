"""ModelConfig: presets, from_spec, validation with messages naming the key."""

import dataclasses

import pytest

from qernel.model import ModelConfig


def test_presets_and_defaults():
    tiny, paper = ModelConfig.from_spec("tiny"), ModelConfig.from_spec("paper")
    assert tiny == ModelConfig()
    assert (tiny.d_model, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads, tiny.n_experts, tiny.top_k,
            tiny.n_determinants) == (32, 2, 4, 2, 4, 2, 2)
    assert paper.d_model > tiny.d_model and paper.n_determinants > tiny.n_determinants
    assert paper.n_heads % paper.n_kv_heads == 0 and paper.d_model % paper.n_heads == 0


def test_from_mapping_with_preset_and_round_trip():
    cfg = ModelConfig.from_spec({"preset": "paper", "n_determinants": 4})
    assert cfg.d_model == 256 and cfg.n_determinants == 4
    assert ModelConfig.from_spec(cfg.to_dict()) == cfg
    assert ModelConfig.from_spec({"d_model": 64}) == dataclasses.replace(ModelConfig(), d_model=64)


@pytest.mark.parametrize("spec,key", [
    ({"n_layer": 3}, "n_layer"),
    ({"preset": "huge"}, "huge"),
    ({"d_model": 30}, "d_model"),           # not divisible by n_heads = 4
    ({"n_kv_heads": 3}, "n_kv_heads"),      # does not divide n_heads
    ({"top_k": 5}, "top_k"),                # more than n_experts
    ({"n_layers": 0}, "n_layers"),
    ({"n_layers": 2.5}, "n_layers"),
    ({"orbital_prior": "yes"}, "orbital_prior"),
    ({"router_margin": -1.0}, "router_margin"),
    ({"dtype": "float16"}, "dtype"),
    ({"prior_anchors": 0}, "prior_anchors"),
    ({"prior_anchors": 3, "complex_output": False}, "prior_anchors"),
])
def test_bad_specs_name_the_key(spec, key):
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_spec(spec)


def test_unknown_preset_name():
    with pytest.raises(ValueError, match="giant"):
        ModelConfig.from_spec("giant")
