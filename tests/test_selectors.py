"""Regex selection over '/'-joined parameter paths."""

import numpy as np
import pytest

from methods import selectors

TREE = {
    "bert": {
        "encoder": {
            "layer": {
                "0": {
                    "output": {
                        "dense": {"kernel": np.ones((2, 2)), "bias": np.ones(2)},
                        "LayerNorm": {"scale": np.ones(2)},
                    }
                }
            }
        }
    },
    "classifier": {"kernel": np.ones((2, 3)), "bias": np.ones(3)},
}


def test_paths_are_slash_joined():
    assert "bert/encoder/layer/0/output/dense/kernel" in selectors.param_paths(TREE)
    assert "classifier/bias" in selectors.param_paths(TREE)


def test_first_matching_rule_wins():
    tree = selectors.apply_rules(
        TREE, [(r".*/bias", "train"), (r"classifier/.*", "train"), (r".*", "freeze")]
    )
    assert tree["classifier"]["kernel"] == "train"
    assert tree["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["bias"] == "train"
    assert tree["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"] == "freeze"


def test_unmatched_leaf_is_an_error_without_default():
    with pytest.raises(ValueError, match="no rule matches parameter 'classifier/kernel'"):
        selectors.apply_rules(TREE, [(r"bert/.*", 1), (r".*/bias", 1)])


def test_select_with_exclusions():
    mask = selectors.select(TREE, r".*/kernel", exclude=r"classifier/.*")
    assert mask["bert"]["encoder"]["layer"]["0"]["output"]["dense"]["kernel"]
    assert not mask["classifier"]["kernel"]
    assert not mask["classifier"]["bias"]
