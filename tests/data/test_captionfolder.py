"""A captioned image folder (mdm.data.formats.captionfolder) on tiny folders written here: its items in JSONL and CSV,
its texts read without decoding, as a mixture source, and each bad input named by file and line."""

import json

import pytest

from mdm.config import load_config
from mdm.data.formats import CaptionFolderDataset, captionfolder
from mdm.data.mixture import open_source
from mdm.data.sample import Role
from mdm.tasks import Task, supported_tasks


def colour(image) -> str:
    """The name of the fixture colour nearest to the image's mean."""
    mean = (image.mean(dim=(1, 2)) * 255).tolist()
    table = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}  # conftest's
    return min(table, key=lambda n: sum((a - b) ** 2 for a, b in zip(mean, table[n])))


@pytest.mark.parametrize("metadata,column", [("jsonl", "text"), ("csv", "text"), ("jsonl", "caption"),
                                             ("csv", "caption")])
def test_items_per_image_and_per_caption_in_file_order(tmp_path, write_caption_folder, metadata, column):
    captions = write_caption_folder(tmp_path, metadata, column)
    ds = CaptionFolderDataset(tmp_path, 8)
    assert ds.caption_column == column and ds.skipped == 0
    assert [(s.meta["file_name"], [t.text for t in s.texts]) for s in ds] == list(captions.items())
    first = ds[0]
    assert first.image.shape == (3, 8, 8) and colour(first.image) == "red"
    assert all(t.role is Role.CAPTION for t in first.texts) and first.meta["path"] == str(tmp_path / "photos/red-0.png")
    per_caption = CaptionFolderDataset(tmp_path, 8, per_caption=True)
    assert [(s.meta["file_name"], s.text(Role.CAPTION)) for s in per_caption] == [
        ("photos/red-0.png", "a red tile, number 0"), ("photos/green-0.png", "a green tile, number 0"),
        ("photos/blue-0.png", "a blue tile, number 0"), ("photos/yellow-0.png", "a yellow tile, number 0"),
        ("photos/red-0.png", "the same tile again")]
    assert [colour(s.image) for s in per_caption] == ["red", "green", "blue", "yellow", "red"]


def test_a_list_of_captions_is_one_item_a_caption_and_another_column_can_be_named(tmp_path, write_caption_folder):
    write_caption_folder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "photos/blue-0.png", "text": "blue",
                                                         "alt": ["a blue tile", "blue again"]}) + "\n")
    assert [ds.text(Role.CAPTION) for ds in CaptionFolderDataset(tmp_path, 8, per_caption=True,
                                                                 caption_column="alt")] == ["a blue tile", "blue again"]
    assert [t.text for t in CaptionFolderDataset(tmp_path, 8)[0].texts] == ["blue"]


def test_texts_are_read_without_decoding_an_image(tmp_path, write_caption_folder, monkeypatch):
    captions = write_caption_folder(tmp_path)

    def no_decoding(*_):
        raise AssertionError("texts() decoded an image")

    monkeypatch.setattr(captionfolder, "load_image", no_decoding)
    ds = CaptionFolderDataset(tmp_path, 8)
    assert [[t.text for t in ds.texts(i)] for i in range(len(ds))] == list(captions.values())
    with pytest.raises(AssertionError, match="decoded"):  # the check can fail: a Sample decodes
        ds[0]
    # a mixture source's texts, the stage-0 tokenizer's corpus, come from texts(): every caption, no image decoded
    config = load_config("tiny", ["data.name=mixture", f"data.sources=[{{kind: captionfolder, path: {tmp_path}}}]"])
    source = open_source(0, config.data, config.layout.image_size, config.layout.image_channels)
    assert sorted(t.text for i in range(len(source)) for t in source.texts(i)) == sorted(
        c for cs in captions.values() for c in cs)
    assert set(supported_tasks(source.parts)) == {Task.TEXT_TO_IMAGE, Task.IMAGE_TO_TEXT, Task.JOINT}


def test_a_missing_image_is_skipped_and_counted_as_for_coco(tmp_path, write_caption_folder):
    write_caption_folder(tmp_path)
    (tmp_path / "photos" / "green-0.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 1 of 4 images .*photos/green-0\.png \(FileNotFoundError"):
        ds = CaptionFolderDataset(tmp_path, 8, per_caption=True)
    assert len(ds) == 4 and ds.skipped == 1
    assert "photos/green-0.png" not in {s.meta["file_name"] for s in ds}
    with pytest.raises(FileNotFoundError, match=r"photos/green-0\.png"):
        CaptionFolderDataset(tmp_path, 8, strict=True)


# Each bad metadata file and the message naming it, its line and the field; the CLI test says each in one line.
JSONL_ROW = '{"file_name": "photos/red-0.png", "text": "a red tile"}'
BAD_METADATA = {
    "not JSON": ("metadata.jsonl", JSONL_ROW + '\n\n{"file_name": "photos/red-0.png", "text": }\n',
                 r"metadata\.jsonl: line 3 is not JSON \(Expecting value, column 43\)"),
    "not an object": ("metadata.jsonl", '["photos/red-0.png", "a red tile"]\n',
                      r"metadata\.jsonl: line 1 is a JSON list, expected an object"),
    "no file_name": ("metadata.jsonl", JSONL_ROW + '\n{"image": "photos/red-0.png", "text": "red"}\n',
                     r"metadata\.jsonl: line 2 has no field 'file_name' \(its fields: image, text\)"),
    "no caption": ("metadata.jsonl", '{"file_name": "photos/red-0.png", "label": 3}\n',
                   r"metadata\.jsonl: line 1 has no caption field 'text' or 'caption' \(its fields: file_name, "
                   r"label\)"),
    "caption column missing on a later line": (
        "metadata.jsonl", JSONL_ROW + '\n{"file_name": "photos/red-0.png", "caption": "red"}\n',
        r"metadata\.jsonl: line 2 has no field 'text' \(its fields: file_name, caption\)"),
    "empty caption": ("metadata.jsonl", JSONL_ROW + '\n{"file_name": "photos/red-0.png", "text": "  "}\n',
                      r"metadata\.jsonl: line 2: empty caption in 'text'"),
    "caption not a string": ("metadata.jsonl", '{"file_name": "photos/red-0.png", "text": 7}\n',
                             r"metadata\.jsonl: line 1: 'text' is a int, expected a caption string"),
    "no records": ("metadata.jsonl", "\n\n", r"metadata\.jsonl: no records"),
    "csv without file_name": ("metadata.csv", "image,text\nphotos/red-0.png,red\n",
                              r"metadata\.csv: the header \(line 1\) has no column 'file_name' \(its columns: "
                              r"image, text\)"),
    "csv without a caption column": ("metadata.csv", "file_name,label\nphotos/red-0.png,3\n",
                                     r"metadata\.csv: the header \(line 1\) has no caption column 'text' or "
                                     r"'caption' \(its columns: file_name, label\)"),
    "csv empty caption": ("metadata.csv", "file_name,text\nphotos/red-0.png,red\nphotos/red-0.png,\n",
                          r"metadata\.csv: line 3: empty caption in 'text'"),
    "csv short row": ("metadata.csv", "file_name,text\nphotos/red-0.png\n",
                      r"metadata\.csv: line 2 has 1 cells, the header \(line 1\) names 2: file_name, text"),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata_is_named_by_file_line_and_field(tmp_path, write_caption_folder, case):
    write_caption_folder(tmp_path / "f")
    (tmp_path / "f" / "metadata.jsonl").unlink()
    name, text, message = BAD_METADATA[case]
    (tmp_path / "f" / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        CaptionFolderDataset(tmp_path / "f", 8)


def test_no_metadata_file_or_two_of_them_or_no_folder(tmp_path, write_caption_folder):
    write_caption_folder(tmp_path / "f")
    (tmp_path / "f" / "metadata.csv").write_text("file_name,text\nphotos/red-0.png,red\n")
    with pytest.raises(ValueError, match=r"/f: both metadata\.jsonl and metadata\.csv; keep one"):
        CaptionFolderDataset(tmp_path / "f", 8)
    for name in captionfolder.METADATA_FILES:
        (tmp_path / "f" / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"/f: no metadata\.jsonl or metadata\.csv in this captioned image "
                                                r"folder"):
        CaptionFolderDataset(tmp_path / "f", 8)
    with pytest.raises(FileNotFoundError, match=r"captioned image folder not found: .*/nowhere"):
        CaptionFolderDataset(tmp_path / "nowhere", 8)
