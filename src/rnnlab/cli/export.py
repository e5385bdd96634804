"""`rnnlab export RUN --format onnx|web --out PATH`: the model outside rnnlab.

`onnx` writes one ONNX file (`LanguageModel.export_onnx`: checked against PyTorch first, printed
figures, nothing written if the check fails); `web` writes the playground as a folder of static
files that runs the model in the page (`rnnlab.serve.site.export_site`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rnnlab.api import load
from rnnlab.cli.flags import RUN_HELP, json_line, stderr
from rnnlab.export import CheckFailed
from rnnlab.export.onnx import size_label

FORMATS = ("onnx", "web")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as an ONNX file, or the playground as a static web page",
        description="onnx: one .onnx file any ONNX runtime can run (checked against PyTorch "
        "before it is written); web: a folder of static files, the playground running the "
        "model in the page, for any static file server. See docs/deploy.md.",
    )
    p.add_argument("run", type=Path, help=RUN_HELP)
    p.add_argument("--format", choices=FORMATS, required=True, help="what to write")
    p.add_argument(
        "--out", type=Path, required=True, help="onnx: the file to write; web: the folder"
    )
    p.add_argument("--force", action="store_true", help="overwrite an earlier export")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def cmd_export(args: argparse.Namespace) -> int:
    lm = load(args.run, device="cpu")  # a missing or corrupt run: one line, exit 3
    if args.format == "web":
        # The page belongs to the server's package; imported here only, as `rnnlab serve` does.
        from rnnlab.serve.site import export_site

        summary = export_site(lm, args.out, force=args.force)
        if args.json:
            print(json_line(summary))
        else:
            print(
                f"wrote {args.out}/ ({summary['files']} files, {size_label(summary['bytes'])}; "
                f"the weights {size_label(summary['weights_bytes'])}): serve it with any static "
                f"file server, e.g. python3 -m http.server -d {args.out}"
            )
        return 0
    try:
        report = lm.export_onnx(args.out, force=args.force)
    except CheckFailed as e:
        if e.report is not None:
            for line in e.report.lines():
                stderr(line)
        raise
    size = args.out.stat().st_size
    if args.json:
        print(json_line({"out": str(args.out), "bytes": size, "check": report.to_dict()}))
        return 0
    for line in report.lines():
        print(line)
    print(f"wrote {args.out} ({size_label(size)})")
    return 0


COMMANDS = {"export": cmd_export}
