"""Scripts and `brainlm` commands that the tests would run in fresh Python processes, run in forks of one fresh
Python process instead: the same code on the same files, without the ~6 s that each new interpreter spends
importing torch and transformers.

The fork server is `python tests/forked.py ADDRESS`, started once per test process on first use: it imports
`PRELOADED` and then, for each request on its Unix socket, forks a process that takes the request's standard streams
(passed as file descriptors), working folder, environment and `sys.argv` and runs either a script (as `python -c`
would, in a fresh `__main__`) or `brainlm_hf.cli.main(argv)` (what the `brainlm` console script calls); the exit
status comes back on the socket. The server itself never runs torch code, so each fork starts as a fresh process
after its imports (no thread pool inherited from a test). A request whose caller goes away (a timeout) has its
process killed.

`run_python(body, ...)`, `run_brainlm(argv, ...)` and `run_bash(body, ...)` are the callers' side; in `run_bash`,
`brainlm` on the `PATH` is `STAND_IN`, a script that sends its own command line, streams, folder and environment to
the server (`stand_in`, with the standard library only). The console script itself, as a real process, is checked
by `tests/cli` and by the sdist test of `test_docs_blocks.py`. Linux and macOS (fork and file-descriptor passing).
"""

import atexit
import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import NamedTuple

PRELOADED = ("brainlm_hf.cli", "transformers.modeling_utils", "transformers.trainer", "datasets")
STAND_IN = """#!{python} -S
import sys
sys.path.insert(0, {folder!r})
from forked import stand_in
stand_in({address!r})
"""
_SERVER = {}  # this test process's server: its process and address


class Result(NamedTuple):
    returncode: int  # negative: killed by that signal, as `subprocess` gives it
    stdout: str
    stderr: str


def run_python(body: str, cwd: Path, env: dict, timeout: float) -> Result:
    """`python -c body` in `cwd` with environment `env`, in a fork of the server."""
    return _request({"python": body}, cwd, env, timeout)


def run_brainlm(argv: list[str], cwd: Path, env: dict, timeout: float) -> Result:
    """`brainlm ARGV` in `cwd` with environment `env`, in a fork of the server."""
    return _request({"brainlm": list(argv)}, cwd, env, timeout)


def run_bash(body: str, cwd: Path, env: dict, timeout: float) -> Result:
    """`bash -e -o pipefail -c body` in `cwd` with environment `env`; its `brainlm` commands run in forks of the
    server, each with the streams, folder and environment of its own command line."""
    with tempfile.TemporaryDirectory() as bin_folder, _output_files() as (stdout, stderr):
        script = Path(bin_folder) / "brainlm"
        folder = str(Path(__file__).parent)
        script.write_text(STAND_IN.format(python=sys.executable, folder=folder, address=_server_address()))
        script.chmod(0o755)
        env = {**env, "PATH": f"{bin_folder}{os.pathsep}{env.get('PATH', '')}"}
        bash = ["bash", "-e", "-o", "pipefail", "-c", body]
        code = subprocess.run(bash, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                              timeout=timeout).returncode  # fmt: skip
        return Result(code, _read(stdout), _read(stderr))


def stand_in(address: str) -> None:
    """`brainlm` in `run_bash`'s blocks: this process's command line, folder, environment and streams, run by the
    server at `address`; exits with the command's status (128 + N for a command killed by signal N, as a shell)."""
    request = {"brainlm": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
    code = _call(address, request, [0, 1, 2])
    sys.exit(code if code >= 0 else 128 - code)


def _request(request: dict, cwd: Path, env: dict, timeout: float) -> Result:
    request = {**request, "cwd": str(cwd), "env": dict(env)}
    with _output_files() as (stdout, stderr), open(os.devnull) as stdin:
        try:
            code = _call(_server_address(), request, [stdin.fileno(), stdout.fileno(), stderr.fileno()], timeout)
        except TimeoutError as error:
            what = "script" if "python" in request else "brainlm command"
            raise TimeoutError(f"the {what} ran longer than {timeout} s (its process is killed)") from error
        return Result(code, _read(stdout), _read(stderr))


def _call(address: str, request: dict, streams: list[int], timeout: float | None = None) -> int:
    """Send `request` and its `streams` (stdin, stdout, stderr file descriptors) to the server at `address`: its
    size (8 bytes) with the streams, then the request as JSON; the exit status comes back as text. Leaving (a
    timeout) closes the connection, which has the server kill the request's process."""
    with socket.socket(socket.AF_UNIX) as server:
        server.connect(address)
        message = json.dumps(request).encode()
        socket.send_fds(server, [len(message).to_bytes(8, "big")], streams)
        server.sendall(message)
        server.settimeout(timeout)
        status = server.makefile().read()
    if not status:
        raise RuntimeError("the fork server closed the connection without an exit status")
    return int(status)


def _server_address() -> str:
    """The address of this test process's server, started (and waited for) on first use."""
    if _SERVER and _SERVER["process"].poll() is None:
        return _SERVER["address"]
    folder = tempfile.mkdtemp(prefix="brainlm-forks-")
    address, log = f"{folder}/server", Path(folder, "server.log")
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, __file__, address], stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(process.kill)  # first (exit functions run last registered first)
    deadline = time.monotonic() + 300
    while not os.path.exists(address):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the fork server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    _SERVER.update(process=process, address=address)
    return address


def serve(address: str) -> None:
    """The server's loop: one handling process per request, until the test process that started it is gone."""
    for module in PRELOADED:
        __import__(module)
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handling processes are reaped by the system
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(address + ".binding")
        os.rename(address + ".binding", address)  # the address appears once the server listens
        listener.listen()
        listener.settimeout(1)
        while os.getppid() == parent:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            if os.fork() == 0:
                listener.close()
                _handle(connection)  # never returns
            connection.close()


def _handle(connection: socket.socket) -> None:
    """In a handling process: run the request in a fork of this one, kill it if the caller goes away, send back its
    exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    size, streams, _, _ = socket.recv_fds(connection, 8, 3)  # the request's size in bytes, and its streams
    size = int.from_bytes(size + _received(connection, 8 - len(size)), "big")
    request = json.loads(_received(connection, size))
    pid = os.fork()
    if pid == 0:
        connection.close()
        _run_as_a_process(request, streams)  # never returns
    for stream in streams:
        os.close(stream)
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if select.select([connection], [], [], 0.05)[0] and not connection.recv(1):  # the caller is gone
            os.kill(pid, signal.SIGKILL)
            waited = os.waitpid(pid, 0)
            break
    with contextlib.suppress(OSError):
        connection.sendall(str(os.waitstatus_to_exitcode(waited[1])).encode())
    os._exit(0)


def _received(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the caller went away before its request was complete")
        data += chunk
    return data


def _run_as_a_process(request: dict, streams: list[int]) -> None:
    """In the fork: the request's streams, folder, environment and `sys.argv`, then its script or command; exits
    as an interpreter does (exit functions run, streams flushed) with its status."""
    for target, stream in enumerate(streams):
        os.dup2(stream, target)
        os.close(stream)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code = 1
    try:
        if "python" in request:
            sys.argv, sys.path[0] = ["-c"], ""  # as `python -c` has them: imports from the working folder first
            main = sys.modules["__main__"] = types.ModuleType("__main__")
            exec(compile(request["python"], "<string>", "exec"), main.__dict__)
            main.__dict__.clear()  # the script's objects go as at an interpreter's exit (open files are flushed)
            gc.collect()
            code = 0
        else:
            from brainlm_hf.cli import main

            sys.argv = ["brainlm", *request["brainlm"]]
            code = main(request["brainlm"])
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        if not isinstance(exit.code, int | None):
            print(exit.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what an interpreter prints for an uncaught exception, and its status
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


@contextlib.contextmanager
def _output_files():
    """Two temporary files for stdout and stderr (files, not pipes: nothing blocks on a full pipe)."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        yield stdout, stderr


def _read(file) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


if __name__ == "__main__":
    sys.path.pop(0)  # tests/ is not on the path of the processes this server stands in for
    serve(sys.argv[1])
