"""`rnnlab corpus pinyin`: conversion rules, the shipped corpus reproduced, the CLI end to end."""

from __future__ import annotations

from importlib import resources

import pytest

from rnnlab.cli import main
from rnnlab.errors import UsageError
from rnnlab.pinyin import to_pinyin

SOURCE = "中国人爱学习。\n你好，世界！\n"


def shipped(name: str, lines: int) -> str:
    text = resources.files("rnnlab").joinpath("data", name).read_text(encoding="utf-8")
    return "".join(line + "\n" for line in text.split("\n")[:lines])


def test_known_sentence_without_and_with_tones():
    assert to_pinyin("中国人").text == "zhong guo ren\n"
    assert to_pinyin("中国人", tones=True).text == "zhong1 guo2 ren2\n"
    assert to_pinyin("好吗", tones=True).text == "hao3 ma5\n"  # 5: the neutral tone
    assert to_pinyin("绿女").text == "lv nv\n"  # ü as v, like the shipped corpus


def test_non_chinese_characters():
    c = to_pinyin("你好，世界！ABC 123\r\n\n　全角ＡＢＣ１２３ Wi-Fi。\n")
    assert c.text == "ni hao shi jie abc 123\n\nquan jiao abc123 wi fi\n"
    assert (c.lines, c.syllables, c.kept) == (3, 6, 5)
    assert c.distinct_chars == len(set(c.text))


def test_line_count_is_kept_with_or_without_a_final_newline():
    assert to_pinyin("中\n国").text == to_pinyin("中\n国\n").text == "zhong\nguo\n"


def test_reproduces_the_shipped_pinyin_corpus():
    # The shipped corpus was made from songci.txt by the same pypinyin call (data/README.md).
    source, expected = shipped("songci.txt", 200), shipped("pinyin.txt", 200)
    assert to_pinyin(source).text == expected


def test_nothing_to_convert():
    with pytest.raises(UsageError, match="no Chinese characters, letters or digits"):
        to_pinyin("，。！？\n…\n")


@pytest.fixture
def chinese(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text(shipped("songci.txt", 30), encoding="utf-8")
    return f


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_cli_converts_and_the_result_trains(tmp_path, chinese, capsys):
    out = tmp_path / "out.txt"
    assert main(["corpus", "pinyin", str(chinese), str(out)]) == 0
    summary = capsys.readouterr().out.strip()
    text = out.read_text(encoding="utf-8")
    syllables = len(text.split())
    assert summary == (
        f"wrote {out}: 30 lines, {syllables:,} syllables, {len(set(text))} distinct characters"
    )
    assert text == shipped("pinyin.txt", 30)
    tiny = ["--hidden", "8", "--layers", "1", "--batch-size", "4", "--num-steps", "8"]
    run = ["train", "--corpus", str(out), "--out", str(tmp_path / "run"), "--max-steps", "2"]
    assert main([*run, *tiny, "--quiet"]) == 0


def test_cli_tones(tmp_path, capsys):
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text(SOURCE, encoding="utf-8")
    assert main(["corpus", "pinyin", str(src), str(out), "--tones"]) == 0
    assert out.read_text(encoding="utf-8") == "zhong1 guo2 ren2 ai4 xue2 xi2\nni3 hao3 shi4 jie4\n"


def test_cli_reads_other_encodings(tmp_path, capsys):
    src, out = tmp_path / "gb.txt", tmp_path / "out.txt"
    src.write_bytes(SOURCE.encode("gb18030"))
    assert main(["corpus", "pinyin", str(src), str(out)]) == 2
    assert "not valid utf-8" in one_line_error(capsys) and not out.exists()
    assert main(["corpus", "pinyin", str(src), str(out), "--encoding", "gb18030"]) == 0
    assert out.read_text(encoding="utf-8").startswith("zhong guo ren ai xue xi\n")


def test_cli_missing_input(tmp_path, capsys):
    code = main(["corpus", "pinyin", str(tmp_path / "nope.txt"), str(tmp_path / "o.txt")])
    assert code == 2
    assert "'" + str(tmp_path / "nope.txt") + "' is neither" in one_line_error(capsys)


def test_cli_refuses_an_existing_output_without_force(tmp_path, chinese, capsys):
    out = tmp_path / "out.txt"
    out.write_text("precious", encoding="utf-8")
    assert main(["corpus", "pinyin", str(chinese), str(out)]) == 2
    assert "already exists: pass --force" in one_line_error(capsys)
    assert out.read_text(encoding="utf-8") == "precious"
    assert main(["corpus", "pinyin", str(chinese), str(out), "--force"]) == 0
    assert out.read_text(encoding="utf-8") == shipped("pinyin.txt", 30)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "out, extra, message",
    [
        ("missing/out.txt", [], "directory"),
        (".", [], "is a directory: give a file name"),
        ("o.txt", ["--encoding", "klingon"], "unknown encoding 'klingon'"),
    ],
)
def test_cli_other_mistakes(tmp_path, chinese, capsys, out, extra, message):
    assert main(["corpus", "pinyin", str(chinese), str(tmp_path / out), *extra]) == 2
    assert message in one_line_error(capsys)
