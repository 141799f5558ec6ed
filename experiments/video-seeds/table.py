"""Print the moving-digits scores of every ``mdm eval`` record under the given folders, one row each.

    python experiments/video-seeds/table.py experiments/video-seeds/eval-* [runs/R-eval ...]

Besides the README's columns it prints the first frame's share, which says whether a wrong digit comes from
the condition (frame 0 wrong) or from the frames drawn after it, and the caption's direction.
"""
import json
import sys
from pathlib import Path

COLUMNS = [("frames", "frame_accuracy"), ("consistent", "consistency"), ("frame 0", "first_frame_accuracy"),
           ("caption frames", "caption_frame_accuracy"), ("caption consistent", "caption_consistency"),
           ("caption frame 0", "caption_first_frame_accuracy"), ("caption direction", "caption_direction")]


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("| record | " + " | ".join(name for name, _ in COLUMNS) + " | FID |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for folder in map(Path, sys.argv[1:]):
        for record in sorted(folder.glob("moving-digits-*.json")):
            scores = json.loads(record.read_text())["scores"]
            cells = [f"{100 * scores[key]:.1f}%" if key in scores else "" for _, key in COLUMNS]
            print(f"| {folder.name}/{record.stem} | " + " | ".join(cells) + f" | {scores['frame_fid']:.1f} |")


if __name__ == "__main__":
    main()
