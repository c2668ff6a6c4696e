"""Build hook: generate the gRPC stubs from proto/ (grpcio-tools) before setuptools
collects the package; every build step runs this, so the stubs always match proto/."""

import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _build_stubs import generate  # noqa: E402

# Into the source tree (git-ignored), so that setuptools collects it like any package.
generate(HERE / "mneme_client" / "_generated")

setup()
