"""A run on a data mixture: every source and task drawn at the rates of the weights, one tokenizer covering every
source's text, a streamed source holding a bounded number of items, exact resumption, bad sources refused."""

import json
import subprocess
import sys
import weakref

import pytest
import torch

from mdm.cli import main
from mdm.config import ConfigError, load_config
from mdm.data.mixture import Source, open_source
from mdm.data.text_tokenizer import UNK_ID, TextTokenizer
from mdm.tasks import Task, TokenizedData
from mdm.training.mixture import Mixture, StreamedSource, prepare_mixture, task_sampler
from mdm.training.run import train_run

QUIET = dict(progress=False, log=lambda _: None)
FAST = ["backbone.n_layers=1", "train.batch_size=2", "data.vq_steps=3", "data.codebook_size=32",
        "data.vocab_size=64"]


def sources(paths, coco_weight=2, chat_weight=1) -> str:
    return (f"data.sources=[{{kind: coco, path: {paths['captions']}, images: {paths['images']}, "
            f"weight: {coco_weight}}}, {{kind: vqav2, path: {paths['questions']}, annotations: {paths['answers']}, "
            f"images: {paths['images']}}}, {{kind: chat, path: {paths['chat']}, weight: {chat_weight}}}]")


def mixture(paths, *extra: str, **weights):
    return load_config("tiny", ["data.name=mixture", sources(paths, **weights), *FAST, *extra])


def test_a_run_draws_every_source_and_each_of_its_tasks_at_the_rates_of_the_weights(mixture_files, tmp_path):
    # coco 2 : vqav2 1 : chat 1, and within coco text->image twice as often as captioning or joint
    steps = 200
    config = mixture(mixture_files, f"train.steps={steps}", "train.log_every=50",
                     "train.task_weights={text_to_image: 2, image_to_text: 1, joint: 1, vqa: 1, text_to_text: 1, "
                     "class_to_image: 1}")
    run = train_run(config, tmp_path / "run", **QUIET)
    drawn: dict[tuple[str, str], int] = {}
    for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        assert all(v == v for v in entry.values() if isinstance(v, float))  # no NaN
        for source, tasks in entry["draws"].items():
            for task, n in tasks.items():
                drawn[source, task] = drawn.get((source, task), 0) + n
    expected = {("0:coco", "text_to_image"): 0.5 * 2 / 4, ("0:coco", "image_to_text"): 0.5 / 4,
                ("0:coco", "joint"): 0.5 / 4, ("1:vqav2", "vqa"): 0.25, ("2:chat", "text_to_text"): 0.25}
    assert set(drawn) == set(expected) and sum(drawn.values()) == steps
    rates = {key: n / steps for key, n in drawn.items()}
    # binomial standard deviations at 200 draws are 0.025-0.035: 0.08 is over 2 of them
    assert all(abs(rates[key] - p) < 0.08 for key, p in expected.items()), (rates, expected)
    assert run.trainer.step == steps
    saved = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert sorted(saved["trained_tasks"]) == sorted(t for _, t in expected)


def test_the_stage_0_tokenizer_covers_the_text_of_every_source(mixture_files):
    config = mixture(mixture_files)
    data = prepare_mixture(config, None, **QUIET)
    texts = {}
    for index, spec in enumerate(config.data.sources):
        source = open_source(index, config.data, config.layout.image_size, config.layout.image_channels)
        texts[spec["kind"]] = [t.text for i in range(len(source)) for t in source.texts(i)]
    assert [len(texts[kind]) for kind in ("coco", "vqav2", "chat")] == [12, 24, 24]  # chat: scene, question, answer
    for kind, ts in texts.items():
        for text in ts:
            ids = data.tokenizer.encode(text)
            assert UNK_ID not in ids and data.tokenizer.decode(ids) == text, (kind, text)
    # the check can fail: a tokenizer that never saw the chat source maps its λ to unk
    with pytest.warns(UserWarning, match="supports only"):
        others = TextTokenizer.train(texts["coco"] + texts["vqav2"], 64, character_coverage=1.0)
    with pytest.warns(UserWarning, match="map to unk: .*'λ'"):
        assert any(UNK_ID in others.encode(text) for text in texts["chat"])


class LiveItems:
    """Counts the decoded items of a source that are alive (a finalizer per sample), and the most at once."""

    def __init__(self, kind: str) -> None:
        self.kind, self.live, self.most, self.decoded = kind, 0, 0, 0

    def install(self, monkeypatch) -> None:
        getitem = Source.__getitem__

        def counted(source, i):
            sample = getitem(source, i)
            if source.kind == self.kind:
                self.live += 1
                self.decoded += 1
                self.most = max(self.most, self.live)
                weakref.finalize(sample, self._release)
            return sample

        monkeypatch.setattr(Source, "__getitem__", counted)

    def _release(self) -> None:
        self.live -= 1


@pytest.mark.parametrize("memory_items,streamed", [(32, True), (64, False)])
def test_a_streamed_source_never_holds_more_than_memory_items_decoded_items(tmp_path, monkeypatch, memory_items,
                                                                           streamed, write_mixture_files):
    paths = write_mixture_files(tmp_path / "data", captions_per_image=8)  # 48 captions, one item each
    live = LiveItems("coco")
    live.install(monkeypatch)
    # batches of 40 items: a streamed source decodes them 32 at a time
    coco = f"data.sources=[{{kind: coco, path: {paths['captions']}, images: {paths['images']}}}]"
    config = load_config("tiny", ["data.name=mixture", coco, *FAST, f"data.memory_items={memory_items}",
                                  "train.batch_size=40", "train.steps=3", "data.vq_steps=4"])
    run = train_run(config, tmp_path / "run", **QUIET)
    coco = run.data.train.sources[0]
    assert isinstance(coco.data, StreamedSource) is streamed and len(coco.data) == 48
    if streamed:  # decoded again for every VQ-VAE batch and every training batch, never all at once
        assert live.decoded >= 4 * 32 + 40 and live.most == 32
    else:  # held: the measurement sees all 48 at once
        assert live.most == 48
    assert run.trainer.step == 3


def test_a_run_with_a_streamed_source_resumes_exactly(tmp_path, write_mixture_files):
    paths = write_mixture_files(tmp_path / "data", captions_per_image=8)
    config = mixture(paths, "data.memory_items=32", "train.steps=6", "train.log_every=1",
                     "train.checkpoint_every=3")
    full = train_run(config, tmp_path / "full", **QUIET)
    assert isinstance(full.data.train.sources[0].data, StreamedSource)

    class Crash(Exception):
        pass

    def crash_at_4(trainer, entry):
        if trainer.step == 4:
            raise Crash

    with pytest.raises(Crash):
        train_run(config, tmp_path / "cut", on_log=crash_at_4, **QUIET)
    resumed = train_run(config, tmp_path / "cut", resume=True, **QUIET)
    drop_time = lambda h: {k: v for k, v in h.items() if k != "time_s"}  # noqa: E731
    assert [drop_time(h) for h in resumed.trainer.history] == [drop_time(h) for h in full.trainer.history[3:]]


def test_one_source_draws_its_tasks_from_the_generator_as_before():
    """A single-source run draws no source: its task draws, and what the generator holds after them, are those of
    the one multinomial over the task weights it always drew (old runs resume and replay exactly)."""
    data = TokenizedData(torch.zeros(8, 2, 2, dtype=torch.long), {"caption": torch.zeros(8, 3, dtype=torch.long)})
    weights = {"text_to_image": 1.0, "image_to_text": 2.0, "vqa": 1.0, "joint": 3.0}
    draw = task_sampler(data, weights, ours := torch.Generator().manual_seed(5))
    tasks = [Task.TEXT_TO_IMAGE, Task.IMAGE_TO_TEXT, Task.JOINT]
    probs, theirs = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), torch.Generator().manual_seed(5)
    assert [draw() for _ in range(50)] == [(0, tasks[int(torch.multinomial(probs, 1, generator=theirs))])
                                           for _ in range(50)]
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert Mixture.of(data).sources[0].data is data


def test_a_source_that_supports_none_of_the_tasks_is_refused_by_its_index(mixture_files, tmp_path):
    config = mixture(mixture_files, "train.task_weights={text_to_image: 1, vqa: 1}")  # chat trains text->text
    with pytest.raises(ConfigError, match=r"data\.sources\[2\] \(chat\) supports none of the tasks "
                                          r"train\.task_weights trains \(text_to_image, vqa\): its items hold scene, "
                                          r"question, answer, which train text_to_text"):
        train_run(config, tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_the_refusal_names_the_curriculum_when_the_run_has_one(mixture_files, tmp_path):
    config = mixture(mixture_files, "train.task_weights={text_to_image: 1}", "train.curriculum_steps=5",
                     "train.curriculum_task_weights={vqa: 1}")
    with pytest.raises(ConfigError, match=r"data\.sources\[2\] \(chat\) supports none of the tasks "
                                          r"train\.task_weights with train\.curriculum_task_weights trains "
                                          r"\(text_to_image, vqa\)"):
        train_run(config, tmp_path / "run", **QUIET)


def test_a_missing_file_is_named_by_source_index_and_key_before_any_work(mixture_files, tmp_path):
    mixture_files["answers"].unlink()
    with pytest.raises(FileNotFoundError, match=r"data\.sources\[1\]\.annotations: annotations JSON file not "
                                                r"found: .*answers\.json"):
        train_run(mixture(mixture_files), tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_a_source_is_refused_naming_it(mixture_files):
    with pytest.raises(ValueError, match=r"train\.batch_size = 10 is larger than the 8 items of "
                                         r"data\.sources\[2\] \(chat\)"):
        prepare_mixture(mixture(mixture_files, "train.batch_size=10"), None, **QUIET)


def test_mdm_train_names_a_missing_source_file_in_one_line_and_exits_2(mixture_files, tmp_path):
    override = sources(mixture_files).replace(str(mixture_files["questions"]), str(tmp_path / "nowhere.json"))
    done = subprocess.run([sys.executable, "-m", "mdm", "train", "--config", "tiny", "--no-progress", "--out",
                           str(tmp_path / "run"), "data.name=mixture", override],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"mdm: error: data.sources[1].path: questions JSON file not found: {tmp_path / 'nowhere.json'}"]


@pytest.mark.parametrize("override,message", [
    ("data.sources=[{kind: chatlog, path: x.jsonl}]",
     "data.sources[0].kind: expected one of shapesworld, digits, imagefolder, coco, captionfolder, vqav2, chat; "
     "got 'chatlog'"),
    ("data.sources=[{kind: chat, path: x.jsonl, weight: -2}]",
     "data.sources[0].weight: expected a finite number >= 0; got -2"),
    ("data.sources=[{kind: chat, path: x.jsonl, weight: .nan}]",
     "data.sources[0].weight: expected a finite number >= 0; got nan"),
    ("data.sources=[{kind: chat, path: x.jsonl, weight: 0}, {kind: digits, weight: 0}]",
     "data.sources: every weight is 0"),
    ("data.sources=[{kind: coco, path: c.json}]", "data.sources[0].images: coco sources read their images folder"),
    ("data.sources=[{kind: chat, path: c.jsonl, images: i}]", "data.sources[0].images: not a key of chat sources"),
])
def test_mdm_train_refuses_a_bad_source_at_config_load_in_one_line(tmp_path, capsys, override, message):
    assert main(["train", "--config", "tiny", "--out", str(tmp_path / "run"), "data.name=mixture", override]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
