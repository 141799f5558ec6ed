"""Probe: train the shapesworld config on one task only and score that task every EVERY steps.

    python experiments/text-to-text-plateau/one_task_probe.py TASK STEPS EVERY RUN_FOLDER [section.key=value ...]
    python experiments/text-to-text-plateau/one_task_probe.py text_to_text 1500 300 runs/probe backbone.kind=transformer \
        backbone.n_layers=4 diffusion.text_snr_shift=64

Prints its settings first (task, overrides, batch, rate, backbone, text SNR shift), then, every
EVERY steps, the task's referee score on 64 held-out scenes with the EMA and the raw weights
(DPM-Solver++ 20 steps), one thread; for VQA and text->text also per question kind.
After every evaluation, RUN_FOLDER/wrong-answers.txt lists the EMA model's wrong answers then
(VQA, text->text), and RUN_FOLDER/checkpoint holds the weights (raw and EMA) of the last evaluation,
for `mdm eval`. Used to separate "the backbone is slow" from
"the objective teaches this task slowly" (experiments/text-to-text-plateau/).
"""
import sys
import time
from pathlib import Path

import torch

from mdm.checkpoint import save_checkpoint
from mdm.config import load_config
from mdm.diffusion.sampling import SamplerConfig
from mdm.evaluation.shapesworld import TASKS, score_tasks
from mdm.evaluation.vqa_accuracy import exact_match
from mdm.pipeline import MDMPipeline
from mdm.training.loop import Trainer, build_model
from mdm.training.prepare import load_samples, prepare_data, referee_kwargs


def write_wrong_answers(examples: list[tuple], samples: list, path: Path, step: int) -> None:
    """The wrong answers of one evaluation: kind, (scene,) question, the model's answer and the right one."""
    lines = [f"step {step}: wrong answers (question kind | scene | question | answer given | right answer)"]
    for sample, example in zip(samples, examples, strict=True):
        given, right = example[-2], example[-1]
        if not exact_match(given, right):
            context = example[0] if len(example) == 4 else "(image)"
            lines.append(f"{sample.meta['question_kind']} | {context} | {example[-3]} | {given!r} | {right}")
    path.write_text("\n".join(lines) + "\n")


def main(task: str, steps: int, every: int, out: str, overrides: list[str]) -> None:
    if task not in TASKS:
        raise SystemExit(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    torch.set_num_threads(1)
    config = load_config("shapesworld", [f"train.task_weights={{{task}: 1.0}}", *overrides])
    print(f"probe: {task}, {steps} steps, every {every}, overrides {overrides or 'none'}; "
          f"batch {config.train.batch_size}, lr {config.train.lr} ({config.train.lr_decay}), "
          f"backbone {config.backbone.kind.value} x {config.backbone.n_layers} ({config.backbone.scan_patterns}), "
          f"text SNR / {config.diffusion.text_snr_shift}", flush=True)
    data = prepare_data(config, out, progress=False, log=print)
    network, diffusion = build_model(config, {"text": data.tokenizer.vocab_size,
                                              "image": data.vq.config.codebook_size})
    trainer = Trainer(network, diffusion, data.train, config.train)
    held_out = load_samples(config, "val")[:64]
    start = time.time()
    while trainer.step < steps:
        trainer.run(steps=trainer.step + every, progress=False)
        scores = {}
        for weights, model in (("ema", trainer.ema.model), ("raw", network)):
            pipe = MDMPipeline(model, diffusion, data.tokenizer, data.vq, data.text_lens, config)
            result = score_tasks(pipe, held_out, SamplerConfig(steps=20), tasks=(task,),
                                 n_examples=len(held_out), referee_options=referee_kwargs(config))
            scores[weights] = {k: round(v, 3) for k, v in result.scores.items()}
            if weights == "ema" and task in ("vqa", "text_to_text"):
                write_wrong_answers(result.examples[task], held_out, Path(out) / "wrong-answers.txt", trainer.step)
        print(f"step {trainer.step} t={time.time() - start:.0f}s se={trainer.history[-1]['se']} {scores}", flush=True)
        save_checkpoint(Path(out) / "checkpoint", config=config, network=network, ema_state=trainer.ema.model.state_dict(),
                        tokenizer=data.tokenizer, vq=data.vq, text_lens=data.text_lens, step=trainer.step)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:])
