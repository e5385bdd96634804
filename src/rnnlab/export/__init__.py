"""Taking a trained model out of rnnlab: an ONNX file, and the weights the playground page runs.

`onnx` writes one ONNX graph with the interface every runtime sees (ids and a state in, logits and
the next state out), checked against PyTorch before a byte reaches the disk, and runs such a
graph back through onnxruntime (`OnnxLM`) so rnnlab's own decoding can compare the two. `web`
turns the weights into the two files the page's own forward pass reads (`serve/static/inpage.js`);
the page itself is assembled by `rnnlab.serve.site`. onnx and onnxruntime are imported only here,
only when used, and come with `pip install "rnnlab[export]"`.
"""

from __future__ import annotations

from typing import Any

from rnnlab.errors import RnnlabError


class CheckFailed(RnnlabError):
    """The exported model does not answer as PyTorch does: nothing was written (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report  # the figures that failed (an `onnx.CheckReport`)
