"""Config files, their `:arg` strings and the checks of their values."""

import importlib

import pytest

from bertjax.config_args import parse_arg
from configs import finetune


def test_parse_arg_literals_and_strings():
    values = parse_arg("model=mini,smoke=True,task=rte", model="x", task="y", smoke=False)
    assert values == {"model": "mini", "task": "rte", "smoke": True}


@pytest.mark.parametrize(
    ("arg", "value"),
    [("smoke=True", True), ("smoke=true", True), ("smoke=FALSE", False), ("smoke=false", False)],
)
def test_booleans_are_true_or_false(arg, value):
    assert parse_arg(arg, smoke=True if not value else False)["smoke"] is value


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("smoke=Ture", "config argument smoke=Ture: must be true or false"),
        ("smoke=no", "config argument smoke=no: must be true or false"),
        ("smoke=1", "config argument smoke=1: must be true or false"),
        ("drop=two", "config argument drop=two: must be an integer"),
        ("drop=1.5", "config argument drop=1.5: must be an integer"),
        ("sparsity=high", "config argument sparsity=high: must be a number"),
    ],
)
def test_parse_arg_rejects_values_of_the_wrong_type(arg, message):
    with pytest.raises(ValueError) as error:
        parse_arg(arg, smoke=False, drop=2, sparsity=0.5)
    assert str(error.value) == message


def test_numbers_parse_as_their_default_type():
    values = parse_arg("drop=3,sparsity=70,model=3", drop=2, sparsity=0.5, model="x")
    assert values == {"drop": 3, "sparsity": 70.0, "model": "3"}
    assert isinstance(values["sparsity"], float)


@pytest.mark.parametrize(
    ("arg", "message"),
    [("modle=mini", "unknown config argument 'modle'"), ("smoke", "is not key=value")],
)
def test_parse_arg_errors_name_the_culprit(arg, message):
    with pytest.raises(ValueError, match=message):
        parse_arg(arg, model="x", smoke=False)


def test_finetune_config_smoke_and_locking():
    config = finetune.get_config("task=mrpc,smoke=True")
    assert config.task == "mrpc" and config.data.train_limit == 64
    assert finetune.get_config().train.num_epochs == 3
    config.lock()
    with pytest.raises(AttributeError):
        config.train.learning_rat = 1.0


def test_quant_configs_default_to_ema_qat_and_calibrated_ptq():
    from configs import quant_ptq, quant_qat

    qat = quant_qat.get_config("task=mrpc").quant
    assert qat.activation_ranges == "ema" and qat.calibration == ""
    ptq = quant_ptq.get_config("task=mrpc,calibration=mse,batches=4,wbits=4")
    assert ptq.train.num_epochs == 0 and _method_name(ptq) == "quant_ptq_w4a8_mse"
    assert (ptq.quant.calibration, ptq.quant.calibration_batches) == ("mse", 4)


def test_movement_config_names_its_score_optimizer():
    from configs import prune_movement

    adam = prune_movement.get_config("task=mrpc")
    assert _method_name(adam) == "prune_movement_hard_adam" and adam.prune.score_lr == 1e-2
    assert _method_name(prune_movement.get_config("task=mrpc,scores=sum")) == "prune_movement_hard"


def _method_name(config, teacher=None) -> str:
    """results.json's `method` of a config, as the loop derives it."""
    from bertjax.models import variant_config
    from bertjax.train.method_config import build_method, method_name
    from methods.base import Context

    model = variant_config("tiny")
    context = Context(
        total_steps=100,
        model=model,
        teacher=teacher or model,
        trains=config.train.num_epochs > 0,
    )
    return method_name(build_method(config, context))


# The names that configs used to write by hand (before issue 13): derived now, unchanged.
NAMES = [
    ("finetune", "", "finetune"),
    ("bitfit", "", "bitfit"),
    ("layer_drop", "drop=1,strategy=top", "layer_drop_top1"),
    ("layer_drop", "drop=1,strategy=even", "layer_drop_even1"),
    ("prune_magnitude", "sparsity=0.7", "prune_magnitude"),
    ("prune_movement", "movement=soft,scores=sum", "prune_movement_soft"),
    ("prune_structured", "heads=0.5,ffn=0.5", "prune_structured"),
    ("prune_structured", "teacher=T", "prune_structured+distill_kd_soft_ce"),  # KD while pruning
    ("quant_qat", "wbits=4,abits=8", "quant_qat_w4a8"),
    ("quant_ptq", "calibration=percentile", "quant_ptq_w8a8_percentile"),
    ("quant_ptq", "int8=True", "quant_ptq_int8_dynamic"),
    ("distill_kd", "teacher=T,kind=mse", "distill_kd_mse"),
    ("distill_tinybert", "teacher=T,map=top", "distill_tinybert_top"),
    ("distill_emd", "teacher=T", "distill_emd"),
    ("distill_theseus", "teacher=T,schedule=constant,successors=1", "theseus_constant"),
    ("token_reduction", "teacher=T", "distill_kd_soft_ce+token_reduction"),
    ("qat_first", "then=layer_drop,drop=1", "quant_qat_w8a8+layer_drop_top1"),
    ("qat_first", "", "prune_structured+quant_qat_w8a8"),
]


@pytest.mark.parametrize(("module", "arg", "name"), NAMES)
def test_method_names_are_derived_from_the_methods(module, arg, name):
    config = importlib.import_module(f"configs.{module}").get_config(f"task=mrpc,{arg}")
    if config.get("model") is not None and config.model.name == "T":
        config.model.name = "tiny"
    assert _method_name(config) == name


def test_qat_first_refuses_a_second_quantization():
    from configs import qat_first

    with pytest.raises(ValueError, match="then=quant_ptq: must name a non-quantization"):
        qat_first.get_config("task=mrpc,then=quant_ptq")


def test_every_config_lists_its_args_and_validates():
    from bertjax import catalog
    from bertjax.train import validation

    names = catalog.config_names()
    assert {"finetune", "prune_magnitude", "distill_kd"} <= set(names) and "__init__" not in names
    for name in names:
        entry = catalog.config_entry(name)
        arg = "teacher=T" if "teacher" in entry.args else ""  # distillation needs one
        config = importlib.import_module(f"configs.{name}").get_config(arg)
        general = config.get("corpus") is not None  # general distillation has no task
        assert entry.summary and "smoke" in entry.args, name
        assert general or "task" in entry.args, name
        assert validation.problems(config) == [], name


# (config:arg, field overrides, the one-line error)
BAD_VALUES = [
    ("finetune", {"train.batch_size": 0}, "config.train.batch_size must be an integer >= 1, got 0"),
    ("finetune", {"train.batch_size": -8}, "config.train.batch_size must be an integer >= 1"),
    ("finetune", {"train.warmup_ratio": 1.5}, "config.train.warmup_ratio must be in [0, 1]"),
    ("finetune", {"task": "nosuchtask"}, "config.task must be a GLUE task (cola, sst2,"),
    ("finetune", {"data.root": "/no/data"}, "config.data.root must be an existing directory"),
    ("prune_magnitude:sparsity=70", {}, "config.prune.sparsity must be in [0, 1), got 70.0"),
    (
        "prune_magnitude",
        {"prune.initial_sparsity": 0.9},
        "config.prune.initial_sparsity must be <= config.prune.sparsity (0.5), got 0.9",
    ),
    ("quant_qat:abits=1", {}, "config.quant.activation_bits must be 0 (off) or an integer in"),
    ("distill_kd:teacher=T,temperature=0", {}, "config.distill.temperature must be in (0, inf)"),
    ("token_reduction:teacher=T", {"token_reduction.samples": 1}, "config.token_reduction.samples"),
    (
        "token_reduction:teacher=T",
        {"token_reduction.layers": [3, 1]},
        "config.token_reduction.layers must be an increasing list",
    ),
]


@pytest.mark.parametrize(("config_arg", "overrides", "message"), BAD_VALUES)
def test_config_values_are_checked_naming_the_field(config_arg, overrides, message):
    from bertjax.train import validation

    module, _, arg = config_arg.partition(":")
    config = importlib.import_module(f"configs.{module}").get_config(arg)
    for field, value in overrides.items():
        block, _, name = field.rpartition(".")
        (config[block] if block else config)[name] = value
    with pytest.raises(ValueError) as error:
        validation.check_config(config)
    assert str(error.value).startswith(message), str(error.value)
