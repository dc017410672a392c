"""Config files and their `:arg` strings."""

import pytest

from bertjax.config_args import parse_arg
from configs import finetune


def test_parse_arg_literals_and_strings():
    values = parse_arg("model=mini,smoke=True,task=rte", model="x", task="y", smoke=False)
    assert values == {"model": "mini", "task": "rte", "smoke": True}


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
    assert ptq.train.num_epochs == 0 and ptq.method == "quant_ptq_w4a8_mse"
    assert (ptq.quant.calibration, ptq.quant.calibration_batches) == ("mse", 4)


def test_movement_config_names_its_score_optimizer():
    from configs import prune_movement

    assert prune_movement.get_config("task=mrpc").method == "prune_movement_hard"
    adam = prune_movement.get_config("task=mrpc,scores=adam")
    assert adam.method == "prune_movement_hard_adam" and adam.prune.score_lr == 1e-2
