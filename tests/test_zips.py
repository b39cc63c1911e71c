"""Zip uploads: bombs, unsafe paths, links, nesting, captions (pure functions over bytes)."""

from __future__ import annotations

import io
import struct
import time
import zipfile

from bot.datasets.images import NOT_AN_IMAGE, expand_upload
from bot.datasets.zips import NESTED_ZIP, NO_IMAGES, expand_zip

from .test_images import LIMITS, Limits, encode, make_zip, picture

# --- zips --------------------------------------------------------------------------------------------


def test_zip_bomb_is_rejected_without_unpacking():
    buf = io.BytesIO()
    zeros = bytes(2**20)
    with (
        zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("bomb.bmp", "w") as entry,
    ):
        for _ in range(600):  # 600 MB of zeros, about 3 MB compressed
            entry.write(zeros)
    started = time.perf_counter()
    images, skips = expand_upload("bomb.zip", buf.getvalue(), LIMITS)
    assert time.perf_counter() - started < 1
    assert not images and len(skips) == 1
    assert skips[0].name == "bomb.zip" and "limit for one zip" in skips[0].reason


def test_zip_entries_over_the_file_limit_or_with_absurd_ratios_are_skipped():
    good = encode(picture(4), "PNG")
    data = make_zip({"big.bmp": bytes(60 * 2**20), "dense.bmp": bytes(10 * 2**20), "ok.png": good})
    images, skips = expand_zip("set.zip", data, LIMITS)
    assert [i.name for i in images] == ["ok.png"]
    reasons = {s.name: s.reason for s in skips}
    assert "limit per file" in reasons["set.zip/big.bmp"]
    assert "zip bomb" in reasons["set.zip/dense.bmp"]


def test_zip_total_limit_and_entry_count_limit():
    entries = {f"{i}.png": encode(picture(i), "PNG") for i in range(5)}
    data = make_zip(entries)
    total = sum(len(v) for v in entries.values())
    images, skips = expand_zip("all.zip", data, Limits(max_zip_total_bytes=total - 1))
    assert not images and "split it into smaller zips" in skips[0].reason
    images, skips = expand_zip("all.zip", data, Limits(max_zip_entries=4))
    assert not images and len(skips) == 1 and "5 entries" in skips[0].reason
    images, skips = expand_zip("all.zip", data, Limits(max_zip_entries=5))
    assert len(images) == 5 and not skips


def test_zip_header_that_lies_about_sizes_is_not_trusted():
    data = bytearray(make_zip({"liar.bmp": bytes(3 * 2**20)}))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = struct.pack("<I", 1000)  # uncompressed size
    data[central + 24 : central + 28] = struct.pack("<I", 1000)
    images, skips = expand_zip("liar.zip", bytes(data), LIMITS)
    assert not images and len(skips) == 1 and "damaged" in skips[0].reason


def test_zip_slip_absolute_and_backslash_paths_are_skipped():
    good = encode(picture(5), "PNG")
    names = ["../evil.png", "/abs.png", "C:\\x.png", "dir\\..\\..\\y.png", "a/../../z.png", "D:/w.png"]
    images, skips = expand_zip("slip.zip", make_zip({**dict.fromkeys(names, good), "fine.png": good}), LIMITS)
    assert [i.name for i in images] == ["fine.png"]
    assert len(skips) == len(names)
    assert all("unsafe path" in s.reason for s in skips)


def test_symlink_entry_is_skipped():
    link = zipfile.ZipInfo("link.png")
    link.external_attr = 0o120777 << 16
    images, skips = expand_zip("links.zip", make_zip([(link, b"/etc/passwd")]), LIMITS)
    assert not images and "symbolic link" in skips[0].reason


def test_nested_zip_is_not_opened():
    inner = make_zip({"a.png": encode(picture(6), "PNG")})
    images, skips = expand_zip("outer.zip", make_zip({"inner.zip": inner, "disguised.png": inner}), LIMITS)
    assert not images
    assert [s.reason for s in skips] == [NESTED_ZIP, NESTED_ZIP]


def test_empty_and_corrupt_zips_give_one_reason():
    for data in (make_zip({}), make_zip({"folder/": b"", "__MACOSX/._a.png": b"x", ".DS_Store": b"x"})):
        images, skips = expand_upload("empty.zip", data, LIMITS)
        assert not images and [(s.name, s.reason) for s in skips] == [("empty.zip", NO_IMAGES)]
    for data in (b"PK\x03\x04 this is not really a zip", b"just text"):
        images, skips = expand_upload("broken.zip", data, LIMITS)
        assert not images and len(skips) == 1 and "not a readable zip" in skips[0].reason


def test_zip_captions_pair_by_folder_and_stem():
    png = encode(picture(7), "PNG")
    entries = {
        "set/": b"",
        "set/Cat.PNG": png,
        "set/cat.txt": b"  tkchar, 1girl, smile \n",
        "other/dog.jpg": encode(picture(8), "JPEG"),
        "dog.txt": b"wrong folder",
        "bird.webp": encode(picture(9), "WEBP"),
        "bird.txt": b"\xff\xfe not utf-8 \xc3",
        "orphan.txt": b"nobody's caption",
        "__MACOSX/set/._Cat.PNG": b"resource fork",
        "set/.hidden.png": png,
    }
    images, skips = expand_upload("data.zip", make_zip(entries), LIMITS)
    captions = {i.name: i.caption for i in images}
    assert captions == {"Cat.PNG": "tkchar, 1girl, smile", "dog.jpg": None, "bird.webp": None}
    assert [(s.name, s.reason) for s in skips] == [
        ("data.zip/bird.txt", "the caption is not UTF-8 text: save it as UTF-8 and upload again")
    ]


def test_zip_recognized_by_magic_bytes_and_bad_entries_reported_per_file():
    entries = {"a.png": encode(picture(10), "PNG"), "notes.png": b"not an image", "locked.png": b"x"}
    data = make_zip(entries)
    images, skips = expand_upload("upload.bin", data, LIMITS)
    assert [i.name for i in images] == ["a.png"]
    assert {s.name: s.reason for s in skips} == {
        "upload.bin/notes.png": NOT_AN_IMAGE,
        "upload.bin/locked.png": NOT_AN_IMAGE,
    }


def test_encrypted_zip_entry_is_skipped():
    data = bytearray(make_zip({"secret.png": encode(picture(11), "PNG")}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature) + offset
        data[at : at + 2] = struct.pack("<H", struct.unpack("<H", data[at : at + 2])[0] | 0x1)
    images, skips = expand_zip("secret.zip", bytes(data), LIMITS)
    assert not images and "password" in skips[0].reason
