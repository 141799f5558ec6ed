"""Loaders of real formats (mdm.data.formats) on tiny fixtures written here: PNGs by PIL, JSON by hand."""

import json
import warnings

import pytest
import torch
from PIL import Image

from mdm.data.formats import ChatJsonlDataset, CocoCaptionsDataset, ImageFolderDataset, VQAv2Dataset, load_image
from mdm.data.sample import Role

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def png(path, colour, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def garbage(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a jpeg at all \x00\x01\x02" * 10)
    return path


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def colour_of(image, tol=3):
    """Mean colour of (3, H, W) in 0..255, snapped to a pure colour within ``tol`` (JPEG fixtures are lossy)."""
    mean = (image.mean(dim=(1, 2)) * 255).tolist()
    return tuple(255 if v > 255 - tol else 0 if v < tol else round(v) for v in mean)


# --------------------------------------------------------------------------- images


def test_load_image_crops_centre_then_resizes(tmp_path):
    im = Image.new("RGB", (30, 10), BLUE)  # wide: red in the middle third only
    im.paste(RED, (10, 0, 20, 10))
    im.save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert colour_of(x) == RED  # the centre crop is the red square, undistorted
    gray = Image.new("L", (9, 9), 128)
    gray.save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png", (4, 6)).shape == (3, 4, 6)  # converted to RGB
    with pytest.raises(ValueError, match="image_size"):
        load_image(tmp_path / "gray.png", (0, 4))
    with pytest.raises(OSError, match="cannot read image .*junk.png"):
        load_image(garbage(tmp_path / "junk.png"), 4)


def test_image_folder(tmp_path):
    png(tmp_path / "zebra" / "a.png", RED)
    png(tmp_path / "ant" / "b.png", GREEN, size=(7, 13))
    png(tmp_path / "ant" / "c.PNG", BLUE)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, 8)
    assert ds.class_names == ["ant", "zebra"] and len(ds) == 3 and ds.skipped == 0
    samples = [ds[i] for i in range(3)]
    assert [s.label for s in samples] == [0, 0, 1]
    assert [colour_of(s.image) for s in samples] == [GREEN, BLUE, RED]
    assert all(s.image.shape == (3, 8, 8) for s in samples)
    assert samples[2].meta["class_name"] == "zebra"


def test_image_folder_corrupt_image_skipped_and_counted(tmp_path):
    png(tmp_path / "cat" / "ok.png", RED)
    png(tmp_path / "dog" / "ok.png", GREEN)
    bad = garbage(tmp_path / "dog" / "broken.jpg")
    with pytest.warns(UserWarning, match="skipped 1 of 3 .*broken.jpg"):
        ds = ImageFolderDataset(tmp_path, 4)
    assert len(ds) == 2 and ds.skipped == 1 and ds.skipped_files[0][0] == str(bad)
    assert sorted(s.label for s in ds) == [0, 1]
    with pytest.raises(ValueError, match="broken.jpg"):
        ImageFolderDataset(tmp_path, 4, strict=True)


def test_truncated_image_caught_by_full_verify(tmp_path):
    path = tmp_path / "c" / "big.png"
    path.parent.mkdir()
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixels cut
    png(tmp_path / "c" / "ok.png", RED)
    with pytest.warns(UserWarning, match="big.png"):
        ds = ImageFolderDataset(tmp_path, 4, full_verify=True)
    assert len(ds) == 1 and ds.skipped == 1


def test_image_folder_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_root"):
        ImageFolderDataset(tmp_path / "missing_root", 8)
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataset(tmp_path, 8)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path, 8)


# --------------------------------------------------------------------------- COCO


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "images"
    png(images / "000001.png", RED)
    png(images / "000002.png", GREEN)
    png(images / "000003.png", BLUE)
    ann = {
        "images": [{"id": 1, "file_name": "000001.png"}, {"id": 2, "file_name": "000002.png"},
                   {"id": 3, "file_name": "000003.png"}],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A red square."},
            {"image_id": 2, "id": 11, "caption": "Green everywhere."},
            {"image_id": 1, "id": 12, "caption": " All red. "},
        ],
    }
    return write_json(tmp_path / "captions.json", ann), images


def test_coco_per_image(coco):
    ann, images = coco
    ds = CocoCaptionsDataset(ann, images, 6)
    assert len(ds) == 3
    first = ds[0]
    assert first.meta["image_id"] == 1 and colour_of(first.image) == RED
    assert [(t.role, t.text) for t in first.texts] == [(Role.CAPTION, "A red square."), (Role.CAPTION, "All red.")]
    assert ds[2].texts == []  # an uncaptioned image is kept (image-only data)


def test_coco_per_caption(coco):
    ann, images = coco
    ds = CocoCaptionsDataset(ann, images, 6, per_caption=True)
    assert [(s.meta["image_id"], s.text(Role.CAPTION)) for s in ds] == [
        (1, "A red square."), (2, "Green everywhere."), (1, "All red.")]


def test_coco_corrupt_and_missing_images(coco):
    ann, images = coco
    garbage(images / "000002.png")
    (images / "000003.png").unlink()
    with pytest.warns(UserWarning, match="skipped 2 of 3"):
        ds = CocoCaptionsDataset(ann, images, 6)
    assert len(ds) == 1 and ds.skipped == 2
    assert {p.rsplit("/", 1)[-1] for p, _ in ds.skipped_files} == {"000002.png", "000003.png"}
    with pytest.raises(ValueError, match="000002.png"):
        CocoCaptionsDataset(ann, images, 6, strict=True)


def test_coco_bad_json(tmp_path, coco):
    ann, images = coco
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n {"id": 1,, }]}')
    with pytest.raises(ValueError, match=r"bad.json: malformed JSON at line 2, column"):
        CocoCaptionsDataset(bad, images, 6)
    data = json.loads(ann.read_text())
    del data["annotations"][1]["caption"]
    write_json(bad, data)
    with pytest.raises(ValueError, match=r"bad.json: annotations record 1 has no field 'caption'"):
        CocoCaptionsDataset(bad, images, 6)
    data = json.loads(ann.read_text())
    data["annotations"][0]["image_id"] = 99
    write_json(bad, data)
    with pytest.raises(ValueError, match="image_id 99 not in 'images'"):
        CocoCaptionsDataset(bad, images, 6)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoCaptionsDataset(tmp_path / "nothere.json", images, 6)
    with pytest.raises(FileNotFoundError, match="noimages"):
        CocoCaptionsDataset(ann, tmp_path / "noimages", 6)


# --------------------------------------------------------------------------- VQAv2


def vqa_answers(main, n=10):
    return [{"answer": main if j < 7 else "other", "answer_confidence": "yes", "answer_id": j + 1} for j in range(n)]


@pytest.fixture
def vqa(tmp_path):
    images = tmp_path / "val2014"
    png(images / "COCO_val2014_000000000042.jpg", RED)
    png(images / "7.jpg", GREEN)  # plain-name fallback
    questions = {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What colour is it?", "question_id": 420},
        {"image_id": 42, "question": "Is it round?", "question_id": 421},
        {"image_id": 7, "question": "What colour?", "question_id": 70},
    ]}
    annotations = {"annotations": [
        {"question_id": 420, "image_id": 42, "multiple_choice_answer": "red", "answers": vqa_answers("red"),
         "answer_type": "other"},
        {"question_id": 421, "image_id": 42, "multiple_choice_answer": "no", "answers": vqa_answers("no")},
        {"question_id": 70, "image_id": 7, "multiple_choice_answer": "green", "answers": vqa_answers("green")},
    ]}
    return write_json(tmp_path / "q.json", questions), write_json(tmp_path / "a.json", annotations), images


def test_vqav2(vqa):
    q, a, images = vqa
    ds = VQAv2Dataset(q, a, images, 8)
    assert len(ds) == 3 and ds.skipped == 0
    s = ds[0]
    assert s.text(Role.QUESTION) == "What colour is it?" and s.text(Role.ANSWER) == "red"
    assert s.answers == ["red"] * 7 + ["other"] * 3
    assert s.meta["question_id"] == 420 and s.meta["answer_type"] == "other"
    assert colour_of(s.image) == RED and s.image.shape == (3, 8, 8)
    assert colour_of(ds[2].image) == GREEN and ds[2].meta["path"].endswith("7.jpg")
    test_split = VQAv2Dataset(q, None, images, 8)
    assert test_split[1].answers is None and test_split[1].text(Role.ANSWER) is None


def test_vqav2_image_name_pattern(vqa, tmp_path):
    q, a, images = vqa
    png(images / "img-42.png", BLUE)
    ds = VQAv2Dataset(q, a, images, 8, image_name="img-{image_id}.png")
    assert colour_of(ds[0].image) == BLUE


def test_vqav2_bad_inputs(vqa, tmp_path):
    q, a, images = vqa
    garbage(images / "COCO_val2014_000000000042.jpg")
    with pytest.warns(UserWarning, match="COCO_val2014_000000000042.jpg"):
        ds = VQAv2Dataset(q, a, images, 8)
    assert len(ds) == 1 and ds.skipped == 1  # one image, two questions skipped with it
    with pytest.raises(ValueError, match="COCO_val2014_000000000042.jpg"):
        VQAv2Dataset(q, a, images, 8, strict=True)
    data = json.loads(a.read_text())
    del data["annotations"][2]["multiple_choice_answer"]
    bad = write_json(tmp_path / "bad_a.json", data)
    with pytest.raises(ValueError, match="bad_a.json: annotations record 2 has no field 'multiple_choice_answer'"):
        VQAv2Dataset(q, bad, images, 8)
    data = json.loads(q.read_text())
    del data["questions"][1]["question"]
    bad = write_json(tmp_path / "bad_q.json", data)
    with pytest.raises(ValueError, match="bad_q.json: questions record 1 has no field 'question'"):
        VQAv2Dataset(bad, a, images, 8)
    (tmp_path / "trunc.json").write_text(q.read_text()[:50])
    with pytest.raises(ValueError, match="trunc.json: malformed JSON at line 1"):
        VQAv2Dataset(tmp_path / "trunc.json", a, images, 8)
    with pytest.raises(FileNotFoundError, match="missing_a.json"):
        VQAv2Dataset(q, tmp_path / "missing_a.json", images, 8)


# --------------------------------------------------------------------------- chat


def test_chat_jsonl(tmp_path):
    path = tmp_path / "chat.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"id": "7", "data": ["Q1", "A1", "Q2", "A2"]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]},
    ]
    path.write_text(json.dumps(lines[0]) + "\n\n" + "\n".join(json.dumps(x) for x in lines[1:]) + "\n")
    ds = ChatJsonlDataset(path)
    assert len(ds) == 3
    assert [(t.role, t.text) for t in ds[0].texts] == [(Role.USER, "Hi"), (Role.ASSISTANT, "Hello!")]
    assert [t.role for t in ds[1].texts] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert [t.text for t in ds[1].texts] == ["Q1", "A1", "Q2", "A2"]
    assert ds[2].texts[0].role is Role.TEXT
    assert ds[1].meta["line"] == 3


@pytest.mark.parametrize("line, pattern", [
    ('{"messages": [{"role": "user", "content": "x"}', r"record 1 \(line 2\): malformed JSON"),
    ('{"messages": [{"role": "user"}]}', r"record 1 \(line 2\) message 0 has no field 'content'"),
    ('{"turns": []}', r"record 1 \(line 2\): record has no field 'messages'"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', r"record 1 \(line 2\): message 0 has role 'robot'"),
    ('{"data": ["a", 3]}', r"record 1 \(line 2\): field 'data' must be a list of strings"),
])
def test_chat_jsonl_bad_lines(tmp_path, line, pattern):
    path = tmp_path / "chat.jsonl"
    path.write_text('{"data": ["ok", "fine"]}\n' + line + "\n")
    with pytest.raises(ValueError, match="chat.jsonl: " + pattern):
        ChatJsonlDataset(path)


def test_chat_jsonl_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.jsonl"):
        ChatJsonlDataset(tmp_path / "gone.jsonl")


def test_valid_data_gives_no_warning(tmp_path, coco):
    ann, images = coco
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CocoCaptionsDataset(ann, images, 4).skipped == 0


def test_16_bit_and_palette_images_keep_their_values(tmp_path):
    import numpy as np

    ramp = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280, mean ~ 0.5
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    image = load_image(tmp_path / "gray16.png", 16)
    assert abs(image.mean().item() - ramp.mean() / 65535) < 0.01  # PIL's convert("RGB") gives ~1.0
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 200, 40, 10] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    image = load_image(tmp_path / "palette.png", 16)
    assert torch.allclose(image[:, 8, 8], torch.tensor([200, 40, 10]) / 255.0, atol=1e-6)


def test_coco_fields_of_the_wrong_type_are_named(tmp_path):
    for body, said in (({"images": 5, "annotations": []}, "field 'images' is a int, expected a list"),
                       ({"images": [{"id": [1], "file_name": "a.png"}], "annotations": []},
                        "images record 0 field 'id' is a list"),
                       ({"images": [{"id": 1, "file_name": 7}], "annotations": []},
                        "images record 0 field 'file_name' is a int")):
        (tmp_path / "c.json").write_text(json.dumps(body))
        with pytest.raises(ValueError, match=said):
            CocoCaptionsDataset(tmp_path / "c.json", tmp_path, 8)


def test_exif_orientation_turns_a_phone_photo_upright(tmp_path):
    stored = Image.new("RGB", (40, 20), BLUE)  # landscape as stored: red on the left half
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; show the stored image rotated 90° clockwise
    stored.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "portrait.jpg", (16, 8))  # portrait target: the whole upright photo
    jpeg = 16  # JPEG's blocks bleed a little across the red-blue edge
    assert colour_of(image[:, :8], jpeg) == RED and colour_of(image[:, 8:], jpeg) == BLUE  # red on top, upright
    stored.save(tmp_path / "untagged.jpg", quality=95)
    untagged = load_image(tmp_path / "untagged.jpg", (8, 16))
    assert colour_of(untagged[:, :, :8], jpeg) == RED and colour_of(untagged[:, :, 8:], jpeg) == BLUE


def test_transparent_pixels_are_shown_over_white(tmp_path):
    logo = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent black ground, as image editors save it
    logo.paste((200, 40, 10, 255), (4, 4, 12, 12))
    logo.save(tmp_path / "logo.png")
    image = load_image(tmp_path / "logo.png", 16)
    assert torch.allclose(image[:, 0, 0], torch.ones(3))  # the ground is white, not the stored black
    assert torch.allclose(image[:, 8, 8], torch.tensor([200, 40, 10]) / 255.0, atol=1e-6)
    half = Image.new("LA", (16, 16), (0, 128))  # black at half opacity over white: mid grey
    half.save(tmp_path / "half.png")
    assert abs(load_image(tmp_path / "half.png", 16).mean().item() - 127 / 255) < 0.01
    keyed = Image.new("RGB", (16, 16), (0, 0, 0))  # no alpha channel; black named transparent by a tRNS chunk
    keyed.paste((200, 40, 10), (4, 4, 12, 12))
    keyed.save(tmp_path / "keyed.png", transparency=(0, 0, 0))
    assert torch.allclose(load_image(tmp_path / "keyed.png", 16)[:, 0, 0], torch.ones(3))
