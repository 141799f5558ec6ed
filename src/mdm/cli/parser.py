"""The ``mdm`` argument parser: every subcommand, its options and its help."""

from __future__ import annotations

import argparse

from mdm.cli.data import cmd_data_preview, cmd_tokenizer_train, cmd_vq_train
from mdm.cli.bench import cmd_bench_backbone, cmd_bench_throughput, cmd_bench_train_step, cmd_bench_video
from mdm.cli.demo import add_demo_parser
from mdm.cli.info import cmd_info
from mdm.cli.batch import cmd_answer, cmd_caption
from mdm.cli.sample import cmd_compare, cmd_eval, cmd_generate, cmd_sample
from mdm.cli.train import cmd_quickstart, cmd_train
from mdm.config import PRESETS, DataConfig
from mdm.config.choices import TOKENIZER_TYPES
from mdm.tasks import Task


def _add_config_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config", default=default,
                   help=f"a preset ({', '.join(PRESETS)}) or a YAML file (default: {default})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. backbone.d_model=256 backbone.scan_patterns=12/1")


def _add_bench_args(p: argparse.ArgumentParser, name: str, max_seconds: float, max_seconds_help: str) -> None:
    """The options every ``mdm bench`` command shares: threads, the time budget, and the folder of its records."""
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--max-seconds", type=float, default=max_seconds, help=max_seconds_help)
    p.add_argument("--out", default="bench-results", help=f"folder for {name}.json / .md / .png")


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a run folder (its checkpoint/) or a checkpoint folder")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (1-1000; default 20)")
    p.add_argument("--solver", default="dpmsolver++", choices=["dpmsolver++", "ddpm"],
                   help="Gaussian processes: DPM-Solver++ order 2 (default) or DDPM ancestral")
    p.add_argument("--selection", default="cosine", choices=["cosine", "linear", "off"],
                   help="multi-step selection commit schedule (Thm 3): the most confident positions first; off = "
                        "the plain solver (absorbing process: random unmasking, SEDD's tau-leaping)")
    p.add_argument("--image-selection", default=None, choices=["cosine", "linear", "off"],
                   help="image segments' schedule (default: --selection, but off for the absorbing process, "
                        "whose argmax commits collapse the images' diversity)")
    p.add_argument("--commit-sample", action="store_true",
                   help="with --selection cosine/linear: commit each position (in the order of its confidence) to a "
                        "state drawn from the model instead of the most likely one; more diverse samples")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature of drawn states (--commit-sample; --selection off on the absorbing "
                        "process)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale (0 = unconditional, 1 = conditional, >1 = guided)")
    p.add_argument("--frame-passes", type=int, default=1,
                   help="video: solver runs, run j keeping frame j for the later ones (default 1: the whole clip "
                        "at once; each run costs one sampling)")
    p.add_argument("--later-guidance", type=float, default=None,
                   help="video with --frame-passes: the guidance scale of the runs after the first (default: "
                        "--guidance). The first run settles the first frame; the later ones draw the rest from "
                        "the kept frames")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling noise (same seed, same samples)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--raw-weights", action="store_true", help="use the trained weights instead of the EMA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _add_out_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="also write one PNG a sample (video: a folder of frame PNGs a clip) and samples.jsonl (file, "
                        "index, seed, prompt / label / caption) in DIR; the grid goes to --out, or into DIR "
                        "without --out")


def _add_batch_args(p: argparse.ArgumentParser, default_name: str, fields: str) -> None:
    """What batch captioning and answering share: the batch size, the JSONL written, and strict lists."""
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="inputs a sampler call (default 16); batch k is drawn with seed --seed + k")
    p.add_argument("--out", default=None, metavar="FILE.jsonl",
                   help=f"also write JSON lines ({fields}) to this file (a folder: {default_name} in it)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a list or questions file that names missing images, or an unreadable image in a "
                        "folder or list (default: report them on stderr and go on with the rest)")


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1 (a count of samples), so ``-n 0`` fails at parsing, naming the option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_debug(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--debug`` on ``parser`` and every subcommand below it, before or after the subcommand's name."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the Python traceback of an error instead of its one-line message")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdm", description="Multi-modal Diffusion Mamba (arXiv 2510.13253)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="parameters and FLOPs per token of a config (no allocation)")
    _add_config_args(p, "tiny")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length for FLOPs (default: the layout's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", help="speed benchmarks").add_subparsers(dest="what", required=True)
    p = bench.add_parser("backbone", help="latency and memory of Mamba vs Transformer backbones and the SSD scan")
    _add_config_args(p, "small")
    p.add_argument("--lengths", default=None, help="comma-separated sequence lengths (default 256,...,65536)")
    _add_bench_args(p, "backbone", 30.0, "skip a Transformer length whose predicted latency exceeds this")
    p.add_argument("--ref-max-length", type=int, default=16384,
                   help="longest length at which to time the sequential SSD reference")
    p.add_argument("--plot", action="store_true", help="also write backbone.png")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every backbone's blocks and the SSD scan (as train.compile does); the "
                        "first calls of each length pay the compile")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of one fresh process per measurement (faster; memory "
                        "figures then include earlier measurements)")
    p.set_defaults(func=cmd_bench_backbone)

    p = bench.add_parser("train-step", help="one training step (forward, backward, AdamW) of a preset's model, Mamba "
                                            "vs the parameter-matched Transformer, with a per-op profile")
    _add_config_args(p, "shapesworld")
    p.add_argument("--task", default="joint", choices=[t.value for t in Task],
                   help="the task every timed step trains (default joint: image + caption, both noised)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's train.batch_size)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per model, interleaved (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler per model (0: none)")
    p.add_argument("--top", type=int, default=12, help="ops listed per profile")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="bench-results", help="folder for train-step-CONFIG.json / .md")
    p.add_argument("--compile", action="store_true",
                   help="compile the backbone blocks of both models (train.compile); eager otherwise, whatever "
                        "the config says")
    p.add_argument("--in-process", action="store_true", help="measure in this process, not a fresh one")
    p.set_defaults(func=cmd_bench_train_step)

    p = bench.add_parser("throughput", help="images/s by resolution, Mamba vs a parameter-matched Transformer "
                                            "(Fig. 5)")
    p.add_argument("--config", default=None,
                   help="preset or YAML with a mamba2 backbone (default: small, with 4x4-pixel VQ codes)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--resolutions", default="32,64,128,256", help="comma-separated image sizes in pixels")
    p.add_argument("--lengths", default="256,1024,4096,16384",
                   help="comma-separated token lengths for the forward latency")
    p.add_argument("--batch", type=int, default=4, help="images sampled together")
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    _add_bench_args(p, "throughput", 120.0, "stop a backbone after the first resolution slower than this")
    p.add_argument("--in-process", action="store_true", help="measure in this process, not a fresh one per point")
    p.set_defaults(func=cmd_bench_throughput)

    p = bench.add_parser("video", help="latency and memory of DiM vs full spatio-temporal attention as clips grow")
    _add_config_args(p, "moving-digits")
    p.add_argument("--shapes", default="4x8x8,8x8x8,8x16x16,16x16x16,16x32x32,32x32x32,64x32x32,64x64x64",
                   help="comma-separated clip shapes FRAMESxROWSxCOLS in VQ codes")
    _add_bench_args(p, "video", 60.0, "skip a shape whose predicted latency exceeds this")
    p.add_argument("--memory-limit-gb", type=float, default=24.0,
                   help="address-space cap of each measuring process: a clip that needs more does not fit")
    p.set_defaults(func=cmd_bench_video)

    data = sub.add_parser("data", help="built-in datasets").add_subparsers(dest="what", required=True)
    p = data.add_parser("preview", help="write a PNG grid of samples with their captions/questions/answers")
    p.add_argument("name", choices=["shapesworld", "digits", "moving-digits"])
    p.add_argument("--out", default=None, help="PNG path (default preview-NAME.png)")
    p.add_argument("-n", type=positive_int, default=12, help="number of samples")
    p.add_argument("--split", default="train", help="train, val or test")
    p.add_argument("--seed", type=int, default=0, help="random seed of the generated scenes")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="shapesworld: data.level=easy|medium|hard (default hard) and data.question_kinds=[...]")
    p.set_defaults(func=cmd_data_preview)

    tok = sub.add_parser("tokenizer", help="text tokenizer").add_subparsers(dest="what", required=True)
    p = tok.add_parser("train", help="train a SentencePiece model (App. D's unigram, BPE, or one piece a word)")
    p.add_argument("--input", required=True, help="corpus: a text file, one sentence per line")
    p.add_argument("--vocab-size", type=int, required=True, help="pieces (32000 at scale; small for small corpora)")
    p.add_argument("--model-type", default=DataConfig().tokenizer, choices=list(TOKENIZER_TYPES),
                   help=f"auto: word when every word of the corpus fits in --vocab-size, else unigram; "
                        f"word: one piece a word, unk for unseen words (keeps a small world's words whole); "
                        f"unigram: App. D's, for large corpora; bpe: merges up to whole words as the vocabulary "
                        f"allows (default: {DataConfig().tokenizer}, as data.tokenizer)")
    p.add_argument("--out", default="tokenizer", help="output folder (tokenizer.model, tokenizer.vocab)")
    p.add_argument("--character-coverage", type=float, default=0.9995)
    p.set_defaults(func=cmd_tokenizer_train)

    vq = sub.add_parser("vq", help="the stage-0 image tokenizer").add_subparsers(dest="what", required=True)
    p = vq.add_parser("train", help="train a VQ-VAE on a built-in dataset and report Eq. 15's L2")
    p.add_argument("--data", default="shapesworld", choices=["shapesworld", "digits"])
    p.add_argument("--size", type=int, default=4096, help="training images")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--downsample", type=int, default=4, choices=[2, 4, 8])
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--local", action="store_true",
                   help="each code sees and decodes to its own patch only (data.vq_local in a config)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial weights and batches")
    p.add_argument("--out", default="vq", help="output folder (config.json, model.safetensors)")
    p.set_defaults(func=cmd_vq_train)

    p = sub.add_parser("quickstart", help="train a small MDM on ShapesWorld (minutes on a CPU), then sample, "
                                          "answer and score every task")
    p.add_argument("--out", default="runs/quickstart", help="run folder (reused if it already holds the model)")
    p.add_argument("--minutes", type=float, default=None, help="cap on training minutes (default: the preset's steps)")
    p.add_argument("--n-eval", type=int, default=64, help="held-out scenes scored per task")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides of the quickstart preset")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("train", help="train a model in a run folder (checkpoints, logs; --resume continues it)",
                       description="Train MDM. Under torchrun (--nproc_per_node N) the same command runs data "
                                   "parallel. Every key of a config can be overridden as section.key=value; a "
                                   "mistyped key is an error that lists the valid keys of its section.")
    p.add_argument("--config", default=None,
                   help=f"a preset ({', '.join(PRESETS)}) or a YAML file (default: shapesworld, or the "
                        f"run's own config with --resume)")
    p.add_argument("--out", required=True, help="run folder: config.yaml, checkpoint/, log.jsonl, tensorboard/")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint (exactly)")
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this many minutes")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train.steps=4000 train.lr=3e-4 backbone.kind=transformer")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="text->image (--prompt) or class->image (--label) to a PNG grid; "
                                      "--video: clips to a GIF/MP4 and a frame strip")
    _add_sampler_args(p)
    p.add_argument("--prompt", default=None, help="a caption to draw")
    p.add_argument("--label", type=int, default=None, help="a class label to draw")
    p.add_argument("-n", type=positive_int, default=8, help="images (clips)")
    p.add_argument("--video", action="store_true",
                   help="a video checkpoint (DiM): write the clips as one animation (--out .gif or .mp4; MP4 needs "
                        "ffmpeg or mdm[video]) and their frames as OUT-frames.png")
    p.add_argument("--fps", type=int, default=4, help="frames per second of the animation (--video)")
    p.add_argument("--out", default=None, help="PNG path (default samples.png, inside --out-dir when given); with "
                                               "--video a .gif or .mp4 (default samples.gif)")
    _add_out_dir(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("caption", help="image->text: caption image files, folders of them, or list files")
    _add_sampler_args(p)
    p.add_argument("images", nargs="+", help="image files, folders (every image inside) or list files (one image "
                                             "path a line, relative to the list); resized to the model's size")
    _add_batch_args(p, "captions.jsonl", "image, caption, seed")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("answer", help="answer a question about an image (VQA) or a scene described in text, or "
                                      "every question of a JSONL file")
    _add_sampler_args(p)
    p.add_argument("--question", default=None)
    p.add_argument("--image", default=None, help="image file (VQA)")
    p.add_argument("--scene", default=None, help="a scene in words (text->text)")
    p.add_argument("--questions", default=None, metavar="FILE.jsonl",
                   help='one {"image": path, "question": text} or {"scene": text, "question": text} a line '
                        '(image paths relative to the file)')
    _add_batch_args(p, "answers.jsonl", "each line's fields, answer, seed")
    p.set_defaults(func=cmd_answer)

    p = sub.add_parser("eval", help="score a checkpoint on a suite (shapesworld: every task with the referee; "
                                    "digits: class->image with a digit classifier; moving-digits: DiM video)")
    _add_sampler_args(p)
    from mdm.evaluation import SUITES

    p.add_argument("--suite", required=True, choices=SUITES,
                   help="shapesworld: every task, referee + CIDEr + VQA accuracy + FID (Tables 1-2); digits: "
                        "class->image accuracy, FID, IS, precision, recall (Table 1); moving-digits: per-frame "
                        "digit accuracy, trajectory consistency, frame FID of generated clips; multiple-choice: "
                        "ELBO ranking of --data")
    p.add_argument("-n", type=positive_int, default=64,
                   help="samples per task (multiple-choice: the first n questions)")
    p.add_argument("--data", default=None,
                   help="multiple-choice suite: a JSONL file in the HellaSwag, PIQA, ARC or BoolQ format")
    p.add_argument("--inception", default=None,
                   help="FID Inception weights file: FID/IS/precision/recall on Inception-v3 (needs torch-fidelity) "
                        "instead of the project's feature network")
    p.add_argument("--out", default="eval-results", help="folder for SUITE-SAMPLER.json / .md")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="eval records (the JSON files of mdm eval) side by side in one Markdown "
                                       "table, e.g. Table 3's ablation")
    p.add_argument("records", nargs="+", help="JSON files written by mdm eval")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("generate", help="images and their captions generated together (joint) to a PNG")
    _add_sampler_args(p)
    p.add_argument("-n", type=positive_int, default=8, help="image+caption pairs")
    p.add_argument("--out", default=None, help="PNG path (default generated.png, inside --out-dir when given)")
    _add_out_dir(p)
    p.set_defaults(func=cmd_generate)
    add_demo_parser(sub)
    _add_debug(parser, top=True)
    return parser
