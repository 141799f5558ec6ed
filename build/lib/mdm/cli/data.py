"""``mdm data``, ``mdm tokenizer``, ``mdm vq``: the built-in datasets and the stage-0 tokenizers."""

from __future__ import annotations

import argparse
from pathlib import Path

from mdm.config import ConfigError, MDMConfig, apply_overrides


PREVIEW_KEYS = ("data.level", "data.question_kinds")


def cmd_data_preview(args: argparse.Namespace) -> int:
    from mdm.config import DataConfig
    from mdm.data.preview import preview

    other = [o for o in args.overrides if o.split("=", 1)[0].strip() not in PREVIEW_KEYS]
    if other:
        raise ConfigError(f"mdm data preview takes the overrides {', '.join(PREVIEW_KEYS)} "
                          f"(e.g. data.level=easy), got {', '.join(other)}")
    data = apply_overrides(MDMConfig(data=DataConfig(name=args.name)), args.overrides).data
    path = preview(args.name, args.out or f"preview-{args.name}.png", n=args.n, split=args.split, seed=args.seed,
                   level=data.level, question_kinds=tuple(data.question_kinds))
    print(f"wrote {path}")
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from mdm.data.text_tokenizer import TextTokenizer, vocabulary_report

    with warnings.catch_warnings(record=True) as caught:  # each said on one line, not with a source line
        warnings.simplefilter("always")
        tokenizer = TextTokenizer.train(args.input, args.vocab_size, args.out, model_type=args.model_type,
                                        character_coverage=args.character_coverage)
    for warning in caught:
        print(f"mdm: warning: {warning.message}", file=sys.stderr)
    summary = vocabulary_report(tokenizer, args.input, args.vocab_size)[0]
    print(f"trained a {tokenizer.model_type} SentencePiece model: {summary} -> {Path(args.out)}")
    return 0


def cmd_vq_train(args: argparse.Namespace) -> int:
    import torch

    from mdm.data.registry import load_builtin
    from mdm.nn.vq import VQVAE, VQConfig, codebook_usage, train_vq

    dataset = load_builtin(args.data, "train", size=args.size, seed=args.seed, image_size=args.image_size)
    images = torch.stack([dataset[i].image for i in range(len(dataset))])
    config = VQConfig(in_channels=images.shape[1], downsample=args.downsample, codebook_size=args.codebook_size,
                      local=args.local)
    torch.manual_seed(args.seed)
    model = VQVAE(config)
    history = train_vq(model, images, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    model.save(args.out)
    model.eval()
    with torch.no_grad():
        val = load_builtin(args.data, "val", size=256, seed=args.seed, image_size=args.image_size)
        val_images = torch.stack([val[i].image for i in range(len(val))])
        recon = model.decode(model.encode(val_images))
        l2 = torch.mean((recon - val_images) ** 2).item()
        baseline = torch.mean((images.mean(0, keepdim=True) - val_images) ** 2).item()
        usage = codebook_usage(model.encode(val_images), config.codebook_size)
    print(f"{args.steps} steps, final train loss {history[-1].get('loss', float('nan')):.4f}")
    print(f"validation L2 (Eq. 15) {l2:.5f}  vs mean-image baseline {baseline:.5f}; "
          f"codebook perplexity {usage['perplexity']:.1f}, used {100 * usage['used_fraction']:.0f}%")
    print(f"saved -> {args.out}")
    return 0
