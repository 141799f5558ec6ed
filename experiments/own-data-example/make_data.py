"""The README's example data in miniature: 24 captioned 32 px JPEGs in my_images/ and a VQAv2 file over them.

    python experiments/own-data-example/make_data.py WORKDIR

writes WORKDIR/my_images/{metadata.jsonl, photos/1.jpg ... 24.jpg} and WORKDIR/my_vqa/{questions,annotations}.json:
a circle or a square of one of six colours on a white or black ground; every image one caption, every third a
second one; two questions an image (its colour, its shape).
"""

import itertools
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (235, 215, 30),
           "purple": (140, 40, 170), "orange": (240, 130, 20)}
SHAPES = ("circle", "square")
GROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15)}


def main(work: Path) -> None:
    photos = work / "my_images" / "photos"
    photos.mkdir(parents=True)
    (work / "my_vqa").mkdir()
    captions, questions, answers = [], [], []
    for image_id, (colour, shape, ground) in enumerate(itertools.product(COLOURS, SHAPES, GROUNDS), start=1):
        im = Image.new("RGB", (32, 32), GROUNDS[ground])
        draw = ImageDraw.Draw(im)
        box = (8, 8, 24, 24)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        im.save(photos / f"{image_id}.jpg", quality=95)
        file_name = f"photos/{image_id}.jpg"
        captions.append({"file_name": file_name, "text": f"a {colour} {shape} on a {ground} background"})
        if image_id % 3 == 0:
            captions.append({"file_name": file_name, "text": f"a {shape} painted {colour}"})
        for k, (question, answer) in enumerate((("what colour is the shape?", colour), ("what shape is it?", shape))):
            qid = 10 * image_id + k
            questions.append({"question_id": qid, "image_id": image_id, "question": question})
            answers.append({"question_id": qid, "image_id": image_id, "multiple_choice_answer": answer,
                            "answers": [{"answer": answer}] * 3})
    (work / "my_images" / "metadata.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    (work / "my_vqa" / "questions.json").write_text(json.dumps({"questions": questions}))
    (work / "my_vqa" / "annotations.json").write_text(json.dumps({"annotations": answers}))
    print(f"wrote {image_id} images, {len(captions)} captions, {len(questions)} questions in {work}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
