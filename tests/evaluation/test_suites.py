"""mdm eval suites: records, files, and errors for a checkpoint of another task."""

import json

import pytest
import torch

from mdm.cli import main
from mdm.config import load_config
from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.judges.digit_classifier import train_digit_classifier
from mdm.evaluation.suites import run_suite
from mdm.training.run import train_run

TINY = ["train.steps=1", "train.batch_size=4", "data.train_size=48", "data.vq_steps=2", "data.codebook_size=32",
        "data.vocab_size=64"]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    train_run(load_config("tiny", TINY), out, progress=False, log=lambda _: None)
    return out


def test_shapesworld_suite_writes_json_and_markdown(shapes_run, tmp_path):
    record = run_suite(shapes_run, "shapesworld", SamplerConfig(steps=2), n=2, out=tmp_path)
    assert {"t2i_attributes", "caption_all_true", "vqa", "text_to_text", "joint_agreement"} <= set(record["scores"])
    saved = json.loads((tmp_path / "shapesworld-dpmsolver++-2-cosine-g1.json").read_text())
    assert saved["scores"] == record["scores"] and saved["n"] == 2
    assert "| vqa |" in (tmp_path / "shapesworld-dpmsolver++-2-cosine-g1.md").read_text()


def test_suite_errors_name_what_is_expected(shapes_run, capsys):
    with pytest.raises(ValueError, match="needs a class-conditional Digits checkpoint"):
        run_suite(shapes_run, "digits", SamplerConfig(steps=2), n=2)
    with pytest.raises(ValueError, match="unknown suite 'fid'"):
        run_suite(shapes_run, "fid", SamplerConfig(steps=2))
    assert main(["eval", "--checkpoint", str(shapes_run), "--suite", "digits", "--steps", "2"]) == 2
    assert "class-conditional" in capsys.readouterr().err


def test_digit_classifier_learns_the_real_digits():
    model, accuracy = train_digit_classifier(8, steps=300)
    assert accuracy > 0.9
    with pytest.raises(ValueError, match=r"expected images \(b, c, 8, 8\)"):
        model(torch.zeros(2, 1, 16, 16))
    assert model.predict(torch.zeros(3, 3, 8, 8)).shape == (3,)  # colour is averaged to grey


def test_the_judge_is_the_same_at_every_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = train_digit_classifier(8, steps=60)[0].state_dict()
        assert torch.get_num_threads() == 2  # the caller's setting comes back
        torch.set_num_threads(1)
        one = train_digit_classifier(8, steps=60)[0].state_dict()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(two[k], one[k]) for k in one)


def test_digits_suite_scores_class_to_image(tmp_path):
    digits = ["data.name=digits", "layout.image_size=8", "layout.image_channels=1", "layout.vq_factor=2",
              "train.task_weights={class_to_image: 1.0}"]
    train_run(load_config("tiny", TINY + digits), tmp_path / "run", progress=False, log=lambda _: None)
    record = run_suite(tmp_path / "run", "digits", SamplerConfig(steps=2, guidance_scale=1.5), n=10,
                       out=tmp_path / "results")
    assert 0.0 <= record["scores"]["class_accuracy"] <= 1.0
    assert record["scores"]["classifier_real_accuracy"] > 0.97
    assert (tmp_path / "results" / "digits-dpmsolver++-2-cosine-g1.5.json").is_file()


def test_multiple_choice_suite_and_its_errors(shapes_run, tmp_path):
    data = tmp_path / "piqa.jsonl"
    data.write_text("\n".join(json.dumps({"goal": f"a red circle {i}", "sol1": "on the left", "sol2": "at the top",
                                          "label": i % 2}) for i in range(3)) + "\n")
    record = run_suite(shapes_run, "multiple-choice", SamplerConfig(), n=2, out=tmp_path / "out", data=data)
    assert record["n"] == 2 and set(record["scores"]) == {"piqa", "all"} and record["images_per_s"] is None
    # The suite's accuracy is the share of the first n questions whose lowest-loss choice is the label.
    from mdm.evaluation.multiple_choice import choice_losses, load_multiple_choice
    from mdm.pipeline import MDMPipeline

    pipe = MDMPipeline.from_pretrained(shapes_run)
    items = load_multiple_choice(data)[:2]
    right = [min(range(2), key=choice_losses(pipe, item).__getitem__) == item.label for item in items]
    assert record["scores"]["all"] == record["scores"]["piqa"] == sum(right) / 2
    assert (tmp_path / "out" / "multiple-choice-piqa.json").is_file()
    with pytest.raises(ValueError, match="needs --data FILE.jsonl"):
        run_suite(shapes_run, "multiple-choice", SamplerConfig(), n=2)
    with pytest.raises(ValueError, match="only it reads one"):
        run_suite(shapes_run, "shapesworld", SamplerConfig(), n=2, data=data)


def test_compare_puts_records_side_by_side(shapes_run, tmp_path, capsys):
    run_suite(shapes_run, "shapesworld", SamplerConfig(steps=2), n=2, out=tmp_path)
    run_suite(shapes_run, "shapesworld", SamplerConfig(steps=3), n=2, out=tmp_path)
    records = sorted(tmp_path.glob("shapesworld-*.json"))
    assert main(["compare", *map(str, records), "--out", str(tmp_path / "table.md")]) == 0
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 4 and "caption_cider" in table[0] and "dpmsolver++-3-cosine-g1" in table[3]
    assert "mamba2 `1234/12`, 4 blocks" in table[2]
    old = json.loads(records[0].read_text())  # a record written before scan patterns were recorded
    del old["scan_patterns"], old["parameters"], old["images_per_s"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["compare", str(tmp_path / "old.json")]) == 0
    assert "| mamba2, 4 blocks | – |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"suite": "x"}))
    assert main(["compare", str(tmp_path / "bad.json")]) == 2
    assert "not an mdm eval record (missing checkpoint" in capsys.readouterr().err


def test_a_missing_feature_network_is_named_before_sampling(shapes_run, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="Inception weights .*nope.pth do not exist"):
        run_suite(shapes_run, "shapesworld", SamplerConfig(steps=2), n=4, inception=tmp_path / "nope.pth")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not weights")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="needs torch-fidelity"):
            run_suite(shapes_run, "digits", SamplerConfig(steps=2), n=4, inception=weights)
    assert main(["eval", "--checkpoint", str(shapes_run), "--suite", "shapesworld", "--inception",
                 str(tmp_path / "nope.pth")]) == 2
    assert "do not exist" in capsys.readouterr().err


class _ColourOnly:
    """A stand-in pipeline that answers colour questions right and every other question "zero"."""

    def __init__(self, samples):
        self.answers = [s.text("answer") for s in samples]

    def _answer(self, questions):  # asked about the samples in their order
        return [a if q.startswith("what color") else "zero" for q, a in zip(questions, self.answers, strict=True)]

    def vqa(self, images, questions, sampler, seed=0):
        return self._answer(questions)

    def text_to_text(self, scenes, questions, sampler, seed=0):
        return self._answer(questions)


def test_answers_are_scored_per_question_kind():
    from mdm.data.shapesworld import ShapesWorld
    from mdm.evaluation.shapesworld import score_tasks

    samples = [ShapesWorld("val", 60)[i] for i in range(60)]
    kinds = [s.meta["question_kind"] for s in samples]
    scores = score_tasks(_ColourOnly(samples), samples, tasks=("vqa", "text_to_text")).scores
    zero_right = sum(s.text("answer") == "zero" for s in samples if s.meta["question_kind"] == "count")
    for task in ("vqa", "text_to_text"):
        assert scores[f"{task}_color"] == 1.0
        assert scores[f"{task}_shape"] == scores[f"{task}_size"] == scores[f"{task}_position"] == 0.0
        assert scores[f"{task}_count"] == pytest.approx(zero_right / kinds.count("count"))
        assert scores[task] == pytest.approx((kinds.count("color") + zero_right) / len(samples))


def test_sampler_tags_tell_every_setting_apart():
    from mdm.diffusion.sampling import SamplerConfig
    from mdm.evaluation.suites import sampler_tag

    settings = [SamplerConfig(), SamplerConfig(commit_sample=True), SamplerConfig(commit_sample=True, temperature=0.5), SamplerConfig(temperature=0.5),
                SamplerConfig(image_selection="off"), SamplerConfig(selection="off"), SamplerConfig(guidance_scale=3)]
    tags = [sampler_tag(s) for s in settings]
    assert len(set(tags)) == len(tags) and tags[0] == "dpmsolver++-20-cosine-g1"
