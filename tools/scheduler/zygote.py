"""A pre-imported interpreter that runs stage scripts in forked children (used by prerun.py).

Usage: python tools/scheduler/zygote.py MODULE [MODULE ...]   (talks JSON lines on stdin/stdout)

Importing torch, timm (which imports torchvision and torch._dynamo) and dvclive costs about
5 s of CPU per process, more than training an MLP entry. This process imports them once,
stays single-threaded, and for each request forks a child that runs one stage script
exactly as ``python stages/<script>.py ARGS`` would: ``__main__`` semantics, the script's
directory first on sys.path, the entry's working directory and environment, stdout and
stderr to the entry's log, stdin from /dev/null, its own process group. ``landscape`` is
always imported first (whether listed or not): it pins PyTorch's CPU kernel dispatch
(``landscape.reproducibility``) before any listed module can load torch, so a forked
entry computes the same bits as a fresh process.

Requests (one JSON object per line): ``{"id", "script", "args", "cwd", "env", "log"}``.
Replies: ``{"id", "pid"}`` when forked, ``{"id", "exit"}`` when the child ends (its exit
code; ``-N`` for death by signal N). End of stdin: wait for the children, then exit.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import selectors
import sys
import traceback


def _run_child(request: dict) -> None:
    """In the forked child: become the stage script; never returns."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        fd_in = os.open(os.devnull, os.O_RDONLY)
        fd_log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd_in, 0)
        os.dup2(fd_log, 1)
        os.dup2(fd_log, 2)
        script = os.path.abspath(request["script"])
        sys.argv = [request["script"], *request["args"]]
        sys.path[0] = os.path.dirname(script)  # as `python <script>` sets it
        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as exc:  # same mapping as the interpreter's
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001  (as the interpreter: print the traceback, exit 1)
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


PIN_FIRST = "landscape"
"""Imported before every other preload module: it pins the CPU kernels before torch loads."""


def serve(preload: list[str]) -> None:
    """Import ``landscape``, then ``preload``, then fork one child per request until stdin closes."""
    import threading

    for name in [PIN_FIRST, *(m for m in preload if m != PIN_FIRST)]:
        importlib.import_module(name)
    if threading.active_count() > 1:  # forking a threaded process can deadlock the child
        sys.exit(f"zygote: importing {preload} started {threading.active_count() - 1} thread(s); not forking")
    ids: dict[int, int] = {}
    pending = b""
    stdin_open = True

    def reply(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def reap(block: bool) -> None:
        while ids:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                return
            reply({"id": ids.pop(pid), "exit": os.waitstatus_to_exitcode(status)})
            if block:
                return

    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    while stdin_open or ids:
        if not stdin_open:
            reap(block=True)
            continue
        if sel.select(timeout=0.05):
            chunk = os.read(0, 65536)
            stdin_open = bool(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_child(request)
                ids[pid] = request["id"]
                reply({"id": request["id"], "pid": pid})
        reap(block=False)


if __name__ == "__main__":
    sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src"))
    serve(sys.argv[1:])
