"""Caption building and editing, and the merged tag table."""

from __future__ import annotations

from collections import Counter

from bot.datasets import captions as cap


def test_build_caption_puts_the_trigger_first_without_repeats():
    assert (
        cap.build_caption("tk", ["hatsune_miku"], ["1girl", "tk", "green_hair"])
        == "tk, hatsune_miku, 1girl, green_hair"
    )


def test_tag_table_matches_an_independent_count():
    captions = ["tk, 1girl, green_hair", "tk, 1girl, smile", "tk, smile, smile", "tk"]
    table = cap.tag_table(captions)
    expected = Counter(t for c in captions for t in {x.strip() for x in c.split(",")})
    assert {t.tag: t.count for t in table} == dict(expected)
    assert [t.tag for t in table][:1] == ["tk"] and table[0].share == 1.0
    assert next(t for t in table if t.tag == "smile").count == 2  # once per image


def test_remove_add_replace():
    c = "tk, 1girl, green_hair, smile"
    assert cap.remove_tags(c, {"green_hair", "tk"}, "tk") == "tk, 1girl, smile"  # the trigger stays
    assert cap.add_tags("1girl", ["smile", "1girl"], "tk") == "tk, 1girl, smile"
    assert cap.replace_tag(c, "green_hair", "blue_hair") == "tk, 1girl, blue_hair, smile"
    assert cap.replace_tag(c, "green_hair", "smile") == "tk, 1girl, smile"
    assert cap.replace_tag(c, "absent", "x") == c
