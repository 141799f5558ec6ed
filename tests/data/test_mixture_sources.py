"""A mixture's sources: each kind's items hold the parts its table says, texts are read without images, the
train_size cap is a seeded subset, and a bad file is named with its source."""

import pytest
from PIL import Image

from mdm.config import load_config
from mdm.config.choices import SOURCE_FILES, SOURCE_KINDS
from mdm.data.mixture import PARTS, ImageItems, open_source


def config_of(paths, tmp_path, *extra):
    folder = tmp_path / "classes"
    for name, rgb in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200))):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), rgb).save(folder / name / f"{i}.png")
    sources = (f"[{{kind: shapesworld}}, {{kind: digits}}, {{kind: imagefolder, path: {folder}}}, "
               f"{{kind: coco, path: {paths['captions']}, images: {paths['images']}}}, "
               f"{{kind: vqav2, path: {paths['questions']}, annotations: {paths['answers']}, "
               f"images: {paths['images']}}}, {{kind: chat, path: {paths['chat']}}}]")
    return load_config("tiny", ["data.name=mixture", f"data.sources={sources}", "data.train_size=20", *extra])


def opened(config):
    return [open_source(i, config.data, config.layout.image_size, config.layout.image_channels)
            for i in range(len(config.data.sources))]


def test_every_kind_is_read_and_its_items_hold_the_parts_of_its_kind(mixture_files, tmp_path):
    assert tuple(PARTS) == SOURCE_KINDS == tuple(SOURCE_FILES)
    for source in opened(config_of(mixture_files, tmp_path)):
        item = source[0]
        parts = {t.role.value for t in item.texts} | ({"image"} if item.image is not None else set()) \
            | ({"label"} if item.label is not None else set())
        assert parts == set(PARTS[source.kind]), source.kind
        assert source.roles == tuple(p for p in PARTS[source.kind] if p not in ("image", "label"))
        if item.image is not None:
            assert tuple(item.image.shape) == (3, 16, 16)
    assert [s.num_classes() for s in opened(config_of(mixture_files, tmp_path / "b"))] == [0, 10, 2, 0, 0, 0]


def test_texts_are_read_without_decoding_an_image(mixture_files, tmp_path, monkeypatch):
    sources = {s.kind: s for s in opened(config_of(mixture_files, tmp_path))}
    expected = {kind: [[(t.role, t.text) for t in sources[kind][i].texts] for i in range(len(sources[kind]))]
                for kind in ("coco", "vqav2", "chat")}

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("mdm.data.formats.coco.load_image", refuse)
    monkeypatch.setattr("mdm.data.formats.vqav2.load_image", refuse)
    for kind, texts in expected.items():
        assert [[(t.role, t.text) for t in sources[kind].texts(i)] for i in range(len(sources[kind]))] == texts
    assert len(sources["coco"]) == 12  # one item a caption
    assert sources["imagefolder"].texts(0) == []


def test_train_size_caps_a_source_with_a_seeded_subset(mixture_files, tmp_path):
    capped = {s.kind: s.items for s in opened(config_of(mixture_files, tmp_path, "data.train_size=5"))}
    again = {s.kind: s.items for s in opened(config_of(mixture_files, tmp_path / "b", "data.train_size=5"))}
    other = {s.kind: s.items for s in opened(config_of(mixture_files, tmp_path / "c", "data.train_size=5",
                                                         "data.seed=1"))}
    assert all(len(items) == 5 and items == sorted(items) for items in capped.values())
    assert capped == again and capped["coco"] != other["coco"]


def test_a_bad_file_is_named_with_its_source(mixture_files, tmp_path):
    mixture_files["captions"].write_text('{"images": [}')
    config = config_of(mixture_files, tmp_path)
    with pytest.raises(ValueError, match=r"data\.sources\[3\] \(coco\): .*captions\.json: malformed JSON at line 1"):
        open_source(3, config.data, 16, 3)
    mixture_files["chat"].unlink()
    with pytest.raises(FileNotFoundError, match=r"data\.sources\[5\]\.path: chat JSONL file not found: "):
        open_source(5, config.data, 16, 3)


def test_image_items_read_every_source_in_turn(mixture_files, tmp_path):
    coco, vqa = [s for s in opened(config_of(mixture_files, tmp_path)) if s.kind in ("coco", "vqav2")]
    held = [coco[i] for i in range(3)]
    items = ImageItems([held, [], vqa])
    assert len(items) == 3 + len(vqa)
    assert items[2] is held[2] and items[3].meta == vqa[0].meta and items[len(items) - 1].meta == vqa[-1].meta
    with pytest.raises(IndexError):
        items[len(items)]
