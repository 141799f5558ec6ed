"""``mdm bench train-step``: both models step, the Transformer is the parameter-matched one, the profile names ops."""

import json

import pytest
import torch

from mdm.bench.train_step import bench_train_step, format_train_step, synthetic_data
from mdm.cli import main
from mdm.config import load_config
from mdm.nn.layout import Modality
from mdm.training.loop import missing_compiler


def test_synthetic_data_has_the_preset_shapes():
    config = load_config("shapesworld")
    data, vocab = synthetic_data(config, 5)
    side = config.layout.image_size // config.layout.vq_factor
    assert data.codes.shape == (5, side, side) and int(data.codes.max()) < config.data.codebook_size
    assert data.texts["caption"].shape == (5, config.data.text_lens["caption"])
    assert vocab == {Modality.IMAGE: config.data.codebook_size, Modality.TEXT: config.data.vocab_size}


def test_train_step_times_both_models_and_profiles_them():
    config = load_config("tiny")
    result = bench_train_step(config, threads=torch.get_num_threads(), repeats=2, warmup=1, profile_steps=1,
                              top=4, batch_size=4, progress=lambda _m: None, isolate=False)
    mamba, transformer = result["models"]["mamba"], result["models"]["transformer"]
    assert transformer["n_layers"] < mamba["n_layers"] == config.backbone.n_layers
    assert abs(transformer["backbone_params"] - mamba["backbone_params"]) < 0.25 * mamba["backbone_params"]
    assert mamba["length"] == transformer["length"] > 16  # image + caption + markers
    for m in (mamba, transformer):
        assert len(m["times"]) == 2 and m["seconds"] > 0 and all(v > 0 for v in m["phases"].values())
        for phase in ("forward", "backward"):
            ops = m["profile"][phase]["ops"]
            assert len(ops) == 4 and all(op["self_ms"] > 0 for op in ops)
            assert ops[0]["self_ms"] >= ops[-1]["self_ms"]  # sorted by self time
    assert result["mamba_over_transformer"] == mamba["seconds"] / transformer["seconds"]
    table = format_train_step(result)
    assert "| mamba |" in table and "| transformer |" in table and "#### mamba backward" in table


def test_cli_writes_the_record(tmp_path, capsys):
    code = main(["bench", "train-step", "--config", "tiny", "--batch", "2", "--repeats", "1", "--warmup", "0",
                 "--profile-steps", "0", "--out", str(tmp_path), "--in-process"])
    assert code == 0
    record = json.loads((tmp_path / "train-step-tiny.json").read_text())
    assert set(record["models"]) == {"mamba", "transformer"} and record["batch_size"] == 2
    assert "Mamba / Transformer step time" in (tmp_path / "train-step-tiny.md").read_text()


def test_cli_refuses_bad_arguments(tmp_path, capsys):
    assert main(["bench", "train-step", "--config", "tiny", "--repeats", "0", "--out", str(tmp_path)]) == 2
    assert "--repeats" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(missing_compiler(torch.device("cpu")) is not None, reason="no C++ compiler for torch.compile")
def test_compile_times_both_models_with_inductor_kernels():
    config = load_config("tiny")
    result = bench_train_step(config, threads=1, repeats=1, warmup=2, profile_steps=1, top=40, batch_size=2,
                              progress=lambda _m: None, isolate=True, compile_blocks=True)
    assert result["compiled_blocks"] is True
    for name in ("mamba", "transformer"):  # the fused kernels of the compiled blocks ran in both
        ops = [op["name"] for op in result["models"][name]["profile"]["forward"]["ops"]]
        assert any("CompiledFxGraph" in op for op in ops), (name, ops)
    assert "compiled blocks (both models)" in format_train_step(result)
