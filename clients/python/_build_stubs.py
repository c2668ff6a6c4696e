"""Generates the gRPC stubs of mneme.v1 from the repository's proto/ with grpcio-tools.

Used by setup.py at build time (the stubs are never edited, nor committed) and by the test
that fails when an installed package's stubs no longer match proto/. The only change made
to protoc's output is the gRPC module's import of the messages, made relative so that the
stubs live inside mneme_client instead of a top-level `mneme` package.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PROTO = "mneme/v1/mneme.proto"
FILES = ("mneme_pb2.py", "mneme_pb2.pyi", "mneme_pb2_grpc.py")


def proto_root() -> Path:
    """proto/ of the checkout this package is built from."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "proto", here / "proto"):
        if (candidate / PROTO).is_file():
            return candidate
    raise FileNotFoundError(
        f"cannot find {PROTO}: build mneme-client from the Mneme checkout (pip install ./clients/python)"
    )


def generate(out: Path) -> list[Path]:
    """Writes the three stub files into `out`; returns their paths."""
    from grpc_tools import protoc  # build-time dependency

    root = proto_root()
    include = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(root / PROTO),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {root / PROTO}")
        generated = Path(tmp) / "mneme" / "v1"
        grpc_module = generated / "mneme_pb2_grpc.py"
        text = grpc_module.read_text()
        text, n = re.subn(
            r"^from mneme\.v1 import mneme_pb2 as (\w+)$",
            r"from . import mneme_pb2 as \1",
            text,
            flags=re.M,
        )
        if n != 1:
            raise RuntimeError("unexpected import layout in the generated gRPC module")
        grpc_module.write_text(text)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in FILES:
            shutil.copyfile(generated / name, out / name)
            paths.append(out / name)
    (out / "__init__.py").write_text('"""Generated from proto/mneme/v1/mneme.proto at build time."""\n')
    return paths


if __name__ == "__main__":
    target = Path(os.environ.get("MNEME_STUBS_OUT", "mneme_client/_generated"))
    for p in generate(target):
        print(p)
