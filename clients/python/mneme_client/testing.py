"""Test your agent against the real thing: start ``mneme serve`` on a free loopback port in
a temporary data directory.

The binary is ``$MNEME_BIN``, else ``mneme`` on ``PATH``, else a cargo build found above
the current directory (``target/release/mneme`` or ``target/debug/mneme``).

With pytest (installed with this package, the plugin is loaded automatically)::

    def test_my_agent(mneme_server):
        with Mneme(mneme_server.address) as client:
            client.agent("bot").remember("User prefers formal tone")

Without::

    with MnemeServer() as server:
        client = Mneme(server.address)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["MnemeServer", "find_binary", "mneme_server"]


def find_binary() -> str:
    """The `mneme` executable to run (see the module doc)."""
    explicit = os.environ.get("MNEME_BIN")
    if explicit:
        return explicit
    on_path = shutil.which("mneme")
    if on_path:
        return on_path
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        for build in ("release", "debug"):
            candidate = directory / "target" / build / "mneme"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise FileNotFoundError(
        "no mneme binary: set MNEME_BIN, put mneme on PATH, or run `cargo build --release` in the checkout"
    )


class MnemeServer:
    """A running ``mneme serve`` (stop it with :meth:`stop` or use it as a context manager)."""

    def __init__(
        self,
        args: Sequence[str] = (),
        data_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
        port: int = 0,
    ) -> None:
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory()
        self.data_dir = Path(data_dir) if data_dir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.args = list(args)
        self.binary = binary or find_binary()
        self.env = env
        self.startup_timeout = startup_timeout
        self.port = port
        self.process: subprocess.Popen[str] | None = None
        self.address = ""
        self.start()

    def start(self) -> None:
        """Starts (or restarts) the server; sets :attr:`address`."""
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        env.update(self.env or {})
        self.process = subprocess.Popen(
            [
                self.binary,
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            env=env,
        )
        found: list[str] = []
        ready = threading.Event()
        stdout = self.process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                if line.startswith("mneme listening on "):
                    found.append(line.removeprefix("mneme listening on ").strip())
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(self.startup_timeout) or not found:
            self.kill()
            raise RuntimeError(f"mneme serve did not start (binary {self.binary})")
        self.address = found[0]

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful stop (SIGTERM); returns the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Graceful stop, then start again on the same data directory (and the same port
        when one was given)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes its temporary data directory."""
        if self.process is not None:
            self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> MnemeServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def mneme_server() -> Iterator[MnemeServer]:
        """A fresh real server for one test."""
        with MnemeServer() as server:
            yield server
