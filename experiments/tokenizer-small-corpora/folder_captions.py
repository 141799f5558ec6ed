"""The captions of a small captioned folder: 300 photos described in free English (122 distinct words).

No captioned photo set can be downloaded on the measuring machine, so the captions are drawn from a small
grammar of the kind of things people caption (pets, people, vehicles, places), seeded.
"""

from __future__ import annotations

import random

SUBJECTS = ["a dog", "a black dog", "two dogs", "a cat", "a white cat", "a small child", "a young woman", "an old man",
            "a man", "a woman", "a group of people", "a brown horse", "a red car", "a yellow bus", "a bicycle",
            "a wooden boat", "a flock of birds", "a baby", "a girl", "a boy", "two children", "a cyclist", "a grey pigeon", "a tall giraffe", "an elephant", "a fisherman",
            "a police officer", "a street musician", "a golden retriever", "a family"]
ACTIONS = ["sitting", "standing", "running", "sleeping", "walking", "playing", "waiting", "resting", "parked",
           "lying", "jumping", "eating", "reading", "smiling", "looking around", "crossing the street"]
PLACES = ["on a wooden bench", "in the grass", "near the water", "on a busy street", "in a kitchen", "on the beach",
          "under a tree", "in front of a house", "beside a lake", "on a snowy road", "in a park",
          "at the train station", "on a sofa", "in the garden", "next to a fence", "on a mountain trail",
          "inside a crowded market", "by the old bridge", "on a green hill", "in a quiet library", "at the airport"]
EXTRAS = ["", "", "", " at sunset", " in the rain", " on a sunny day", " with a ball", " holding an umbrella",
          " while people watch", " in the morning", " at night", " covered in mud", " during a storm", " after the festival"]


def folder_captions(n: int = 300, seed: int = 0) -> list[str]:
    """``n`` captions, one a photo; a few are longer, two-clause captions as people write them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}{rng.choice(EXTRAS)}"
        if rng.random() < 0.2:
            text += f" and {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} nearby"
        out.append(text)
    return out
