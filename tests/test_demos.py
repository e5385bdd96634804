"""The SRN demo: three implementations agree and the table shows the hand-calculated numbers."""

from __future__ import annotations

import re

import pytest

from rnnlab.errors import UsageError
from rnnlab.experiments.demos import srn_demo


def test_identity_demo_agrees_and_shows_hand_numbers():
    text, agree = srn_demo("identity")
    assert agree
    rows = [line for line in text.splitlines() if line.startswith("|") and "[" in line]
    assert len(rows) == 9  # 3 steps x 3 implementations
    outputs = [re.findall(r"\[[^]]*\]", row)[-1] for row in rows]  # last column is y_t
    assert outputs == ["[4, 4]"] * 3 + ["[12, 12]"] * 3 + ["[32, 32]"] * 3
    states = [re.findall(r"\[[^]]*\]", row)[-2] for row in rows]
    assert states == ["[2, 2]"] * 3 + ["[6, 6]"] * 3 + ["[16, 16]"] * 3
    assert "relu" in text  # the identity is obtained through relu; the text must say so
    assert text.isascii()


def test_tanh_demo_agrees():
    text, agree = srn_demo("tanh")
    assert agree
    assert "[0.964028, 0.964028]" in text  # tanh(2), the first state
    assert "all three agree (atol 1e-6): yes" in text


def test_unknown_activation_is_a_usage_error():
    with pytest.raises(UsageError, match="identity"):
        srn_demo("sigmoid")


def test_bptt_demo_command_prints_the_curves_and_plots(tmp_path, capsys):
    from rnnlab.cli import main

    png = tmp_path / "bptt.png"
    args = [
        "demo",
        "bptt",
        "--cells",
        "rnn,lstm",
        "--seconds",
        "0.5",
        "--hidden",
        "8",
        "--num-steps",
        "10",
        "--plot",
        str(png),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "k steps back" in out and "rnn (ppl" in out and "lstm (ppl" in out
    assert "ratio 8/1" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["demo", "bptt", "--cells", "rnn,transformer"]) == 2
