"""Every experiment composes; the paper's defaults are what alarm_binary shows."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from reportsup.runner.setup import PROJECT_ROOT, command_line_values, register_all

register_all()
EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "experiments").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(str(Path(PROJECT_ROOT) / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_experiments_are_registered_as_a_group():
    assert set(EXPERIMENTS) <= set(ConfigStore.instance().list("experiment")) | {
        e + ".yaml" for e in EXPERIMENTS
    } or {e + ".yaml" for e in EXPERIMENTS} <= set(ConfigStore.instance().list("experiment"))
    assert {"alarm_binary", "alarm_granular", "alarm_binary_10x", "alarm_granular_10x"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = _compose(f"experiment={name}")
    assert cfg.name == name
    assert cfg.data._target_ and cfg.model._target_ and cfg.data.demo._target_
    # Report models read text through an encoder; image models (DaMIL) and the word2vec baseline have none.
    no_encoder = name.startswith(("damil", "alarm_baseline_word2vec", "spine_resnet18"))
    assert cfg.get("encoder") is None if no_encoder else cfg.encoder._target_


def test_damil_multiscale_has_the_paper_values():
    cfg = _compose("experiment=damil_multiscale")
    m = cfg.model
    assert (m.lr, m.alpha, m.lambda_start, m.lambda_min, m.lambda_decay) == (5e-4, 0.1, 1.0, 0.01, 0.5)
    assert m.network.n_scales == 2 and m.variant == "paper" and m.lr_halving_start_epoch == 3
    assert cfg.data.batch_size == 1 and list(cfg.data.spatial_size) == [160, 160, 80]
    assert cfg.callbacks.early_stopping.patience == 3
    assert cfg.callbacks.model_checkpoint.monitor == "val/region_mil"


@pytest.mark.parametrize("regime", ["1step", "2steps", "step2only"])
def test_spine_image_regimes_have_the_paper_values(regime):
    cfg = _compose(f"experiment=spine_resnet18_{regime}")
    opt = cfg.model.optimizer
    assert (opt._target_, opt.lr, opt.momentum, cfg.data.batch_size) == ("torch.optim.SGD", 0.001, 0.9, 32)
    assert list(cfg.data.image_size) == [512, 512] and cfg.data.green_channel == "zeros"
    assert cfg.model.weights == "IMAGENET1K_V1" and cfg.trainer.max_epochs == 200
    assert cfg.callbacks.early_stopping.monitor == "val/loss" and cfg.callbacks.occlusion.patch == 80
    assert cfg.data.train_on == ("machine" if regime == "1step" else "refinement")
    assert cfg.hydra.mode.name == "MULTIRUN" and len(cfg.hydra.sweeper.params.finding.split(",")) == 12
    assert _compose(f"experiment=spine_resnet18_{regime}", "demo=true").hydra.mode.name == "RUN"


def test_spine_nlp_has_the_paper_settings():
    cfg = _compose("experiment=spine_nlp")
    assert cfg.encoder.name == "dbmdz/bert-base-italian-uncased"
    assert cfg.encoder.lowercase and cfg.encoder.line_breaks_to_spaces
    assert (
        cfg.model.class_weighting == "balanced"
        and cfg.trainer.max_epochs == 20
        and cfg.model.pooling == "cls"
    )
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"
    assert list(cfg.data.labels) == ["instrumentation"] and cfg.hydra.mode.name == "MULTIRUN"
    assert _compose("experiment=spine_nlp", "demo=true").hydra.mode.name == "RUN"
    assert len(_compose("experiment=spine_nlp_multihead").data.labels) == 12


def test_alarm_binary_has_the_paper_defaults():
    cfg = _compose("experiment=alarm_binary")
    assert cfg.model.optimizer.lr == 1e-5 and cfg.model.optimizer._target_ == "torch.optim.Adam"
    assert cfg.data.batch_size == 16
    assert cfg.encoder.name == "dmis-lab/biobert-v1.1"
    assert list(cfg.data.split.fractions) == [0.6, 0.2, 0.2]
    assert (
        cfg.callbacks.model_checkpoint.monitor == "val/loss" and cfg.callbacks.model_checkpoint.mode == "min"
    )


def test_repeat_experiments_sweep_ten_seeds():
    assert _compose("experiment=alarm_binary_10x").hydra.sweeper.params.seed == "range(0,10)"
    params = _compose("experiment=alarm_granular_10x").hydra.sweeper.params
    assert len(params.category.split(",")) == 7 and params.seed == "range(0,10)"
    assert _compose("experiment=alarm_granular").hydra.mode.name == "MULTIRUN"


def test_command_line_values_skip_group_choices_and_hydra_keys():
    values = command_line_values(
        [
            "experiment=alarm_binary",
            "trainer=ddp",
            "trainer.max_epochs=1",
            "data.labels=[a,b]",
            "hydra.mode=RUN",
            "seed=3",
        ]
    )
    assert values == {"trainer.max_epochs": 1, "data.labels": ["a", "b"], "seed": 3}


def test_demo_keeps_an_encoder_chosen_on_the_command_line(tmp_path):
    from reportsup.runner.setup import apply_demo

    overrides = ["experiment=alarm_binary", "encoder=minilm", f"paths.data_dir={tmp_path}", "demo=true"]
    cfg = _compose(*overrides)
    cfg = apply_demo(cfg, command_line_overrides=overrides)
    assert cfg.encoder._target_.endswith("minilm_encoder")
    cfg = _compose("experiment=alarm_binary", f"paths.data_dir={tmp_path}")
    assert apply_demo(cfg, command_line_overrides=[]).encoder._target_.endswith("tiny_bert_encoder")


def test_crossdl_discretizer_has_the_paper_settings():
    cfg = _compose("experiment=crossdl_discretizer")
    assert cfg.model.optimizer.lr == 5e-5 and cfg.data.batch_size == 16 and cfg.encoder.max_length == 128
    assert cfg.callbacks.early_stopping.patience == 1 and cfg.trainer.max_epochs == 5
    assert cfg.encoder.name == "bert-base-chinese" and cfg.data.flip.probability == 0.5
    assert _compose("experiment=crossdl_discretizer_no_flip").data.flip.probability == 0.0
    sizes = _compose("experiment=crossdl_discretizer_trainsize").hydra.sweeper.params[
        "data.max_train_sentences"
    ]
    assert sizes == "100,200,500,1000,1500,3000"


@pytest.mark.parametrize("shape", ["slurm_cpu", "slurm_1gpu", "slurm_4gpu", "slurm_2x4gpu"])
def test_slurm_launcher_shapes_put_one_task_per_device(shape):
    cfg = _compose("experiment=damil_multiscale", f"launcher={shape}", "launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.tasks_per_node == cfg.trainer.devices and launcher.nodes == cfg.trainer.num_nodes
    assert cfg.trainer.strategy == "ddp" and launcher.max_num_timeout >= 1  # requeued on time-out
    if shape != "slurm_cpu":
        assert launcher.gpus_per_node == cfg.trainer.devices and cfg.trainer.accelerator == "gpu"


def test_the_issues_slurm_command_requests_one_gpu_per_rank_and_cpu_clusters_none():
    cfg = _compose(
        "experiment=damil_multiscale",
        "hydra/launcher=slurm",
        "launcher.partition=gpu",
        "trainer.devices=4",
        "trainer.num_nodes=2",
    )
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (4, 16, 1440)
    assert cfg.trainer.sync_batchnorm  # DaMIL: batch 1 per GPU
    cpu = _compose("experiment=alarm_binary", "launcher=slurm_cpu", "trainer.devices=2").hydra.launcher
    assert (cpu.tasks_per_node, cpu.gpus_per_node, cpu.cpus_per_task, cpu.mem_gb) == (2, None, 1, 4)
    two_by_four = _compose("experiment=damil_multiscale", "launcher=slurm_2x4gpu").hydra.launcher
    assert (two_by_four.nodes, two_by_four.tasks_per_node, two_by_four.gpus_per_node) == (2, 4, 4)


def test_local_launcher_is_the_default():
    assert _compose("experiment=alarm_binary").hydra.launcher._target_.endswith("BasicLauncher")


def test_2steps_without_the_1step_checkpoint_refuses_to_start_instead_of_training_as_step2only():
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = _compose("experiment=spine_resnet18_2steps", "model.weights=null")
    assert cfg.model.require_init_checkpoint and cfg.model.init_checkpoint is None
    assert not _compose("experiment=spine_resnet18_step2only").model.require_init_checkpoint
    with pytest.raises(InstantiationException) as err:  # train.py prints its cause in one line
        instantiate(cfg.model, labels=["scoliosis"], image_preprocessing=None)
    assert "model.init_checkpoint is not set: the 2steps regime" in str(err.value.__cause__)
    assert instantiate(
        cfg.model, labels=["scoliosis"], image_preprocessing=None, require_init_checkpoint=False
    )


def test_auto_precision_uses_cpu_bf16_only_where_asked_and_the_cpu_has_native_bf16(monkeypatch):
    import torch

    from reportsup.runner.setup import auto_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for amx, avx512_bf16, expected in (
        (True, True, "bf16-mixed"),  # Sapphire Rapids
        (False, True, "bf16-mixed"),  # AMD Zen 4
        (False, False, "32-true"),  # emulated bf16: slower
    ):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert auto_precision() == "32-true"  # report models: fp32 on every CPU
        assert auto_precision("cpu_bf16") == expected
    with pytest.raises(ValueError, match="cpu_bf16"):
        auto_precision("bf16")


def test_damil_demo_keeps_the_paper_method_and_says_what_it_changes():
    cfg = _compose("experiment=damil_multiscale")
    demo = cfg.demo_overrides
    assert cfg.data.demo.n_scans == 160 and cfg.data.demo.register is False
    assert demo.model.lambda_start == cfg.model.lambda_start == 1.0
    assert OmegaConf.to_container(demo.trainer)["precision"] == "${auto_precision:cpu_bf16}"


def test_crossdl_paper_splits_languages_and_training_sizes():
    """Issue 19, items 4-6: the paper's Chinese reports, its random 3,000 / 904 / 903 sentence split with 1,500
    trained on, its 90/5/5 patient split of the head CTs and its 2,000 ... 28,472 training scans."""
    cfg = _compose("experiment=crossdl_discretizer")
    assert cfg.data.language == "zh" and list(cfg.data.findings_headers)[:2] == ["检查所见", "影像所见"]
    assert "诊断意见" in cfg.data.end_headers and cfg.data.flip.word_map["左"] == "右"
    assert list(cfg.model.sentence_splitting.findings_headers) == list(cfg.data.findings_headers)
    split = cfg.data.split
    assert split.unit == "row" and [round(f * 4807) for f in split.fractions] == [3000, 904, 903]
    assert cfg.data.max_train_sentences == 1500
    english = _compose("experiment=crossdl_discretizer", "data.language=en")
    assert "findings" in english.data.findings_headers and english.data.flip.word_map["left"] == "right"
    ct = _compose("experiment=damil_multiscale").data.split
    assert ct.unit == "patient" and list(ct.fractions) == [0.9, 0.05, 0.05]
    params = _compose("experiment=damil_trainsize").hydra.sweeper.params
    assert params["data.max_train_scans"] == "2000,5000,10000,28472"
    assert _compose("experiment=damil_trainsize_fractions").hydra.sweeper.params["data.train_fraction"]


def test_the_discretizer_demo_is_english_unless_data_language_says_otherwise(tmp_path):
    from reportsup.runner.setup import apply_demo

    for extra, encoder, language in (
        ([], "minilm_encoder", "en"),
        (["data.language=zh"], "tiny_bert_encoder", "zh"),
    ):
        overrides = ["experiment=crossdl_discretizer", f"paths.data_dir={tmp_path}", "demo=true", *extra]
        cfg = apply_demo(_compose(*overrides), command_line_overrides=overrides)
        assert cfg.encoder._target_.endswith(encoder) and cfg.data.language == language
        first = open(cfg.data.sentences_path, encoding="utf-8").read(2000)
        assert ("左" in first) == (language == "zh")
    damil = _compose("experiment=damil_multiscale", "demo=true")
    assert list(damil.demo_overrides.data.split.fractions) == [0.6, 0.2, 0.2]  # the demo's own split
