"""Warm worker: a fork server that keeps torch and transformers imported between workflow jobs.

Why
---
Every workflow job is a fresh ``python -m kdbench.cli stage <job> ...``. On the 2-core development machine
(2026-12-05, idle) ``import torch`` alone takes 1.2–1.5 s, ``import kdbench.stages`` 1.7 s and the Llama
model class 4.2 s: transformers imports ``torch._dynamo`` (masking utilities), ``torch.distributed.tensor``
and sympy (model loading), scipy.optimize (loss utilities); the Rouge-L stemmer's ``nltk`` package adds
0.65 s to evaluation jobs. In the smoke run before this module, the median job spent 2.1 s outside its own
work (47 % of all job time), and the measured work itself still held ~1.6 s of lazy transformers imports.
A job needs torch and the real Hugging Face classes (models are loaded with ``from_pretrained``), so
trimming kdbench's own imports (pandas left training and evaluation jobs: 0.25 s each) cannot reach a
sub-second start-up. Coarser jobs (several runs per process) would pay start-up less often but change the
rules' outputs and lose the per-run parallelism and resumability; ``run:`` blocks inside Snakemake's own
process cannot run jobs in parallel or give each job its own log. So jobs keep their granularity and
borrow a process that has already imported everything. Measured on the default run (2026-12-05, idle
machine): median overhead per job 1.92 s with a fresh Python per job, 0.10 s through this worker, and the
run took 8 min 57 s instead of 11 min 26 s (``docs/benchmarks.md``, "Job start-up").

How
---
``kdbench stage ...`` (the only command the rules run) first calls :func:`run_job`. It connects to a Unix
socket in a private directory (``$XDG_RUNTIME_DIR/kdbench-<uid>/`` or ``/tmp/kdbench-<uid>/``, mode 0700)
whose name is a hash of everything a warm process could disagree with a fresh one on: the interpreter
and its flags, the kdbench sources (content), the site-packages directories (a pip install changes them),
the working directory, niceness and CPU affinity, and the environment variables read at import time
(``TORCH*``, ``PYTORCH*``, ``OMP*``, ``MKL*``, ``KMP*``, ``OPENBLAS*``, ``CUDA*``, ``HF_*``, ``TRANSFORMERS*``,
``TOKENIZERS*``, ``PYTHON*``, ``KDBENCH*``, ``LD_*``, ``LANG``, ``LC_*``). Nobody listening: it starts the
server (``python -m kdbench.worker serve``, its own session and log file ``<hash>.log`` next to the socket)
and waits for it (at most ``START_TIMEOUT_S``). It sends the job's argv, working directory, full
environment and umask, and passes its own stdin/stdout/stderr with ``SCM_RIGHTS``, so the job writes
straight into the rule's log file.

The server imports torch, the transformers classes the jobs use, safetensors, nltk, rapidfuzz and
kdbench's stage modules, and never runs a torch operation (forking after OpenMP or CUDA has started is
unsafe; it refuses to serve if CUDA was initialised). It is single-threaded (a ``select`` loop), so no
lock can be held by another thread at ``fork``. For each request it forks a child that starts its own
process group, restores Python's default signal handlers, puts the received descriptors on 0/1/2,
changes to the job's directory, replaces ``os.environ``, runs :func:`kdbench.cli.run` and leaves with
``os._exit``. The server sends the child's pid, then its exit status. A client that goes away before the
job ends (killed, Snakemake interrupted) makes the server kill the child's process group; SIGINT,
SIGTERM and SIGHUP received by the client are forwarded to it, and a child killed by a signal makes the
client die of the same signal. The server exits after ``KDBENCH_WARM_WORKER_IDLE`` seconds without jobs
(default 120), and stops taking jobs when its sources change, its directory disappears or its socket is
replaced.

Whatever goes wrong before the job starts (no Unix sockets, no private directory, the server fails or is
slow to start, a refused request) runs the job in-process exactly as without the worker; a server that
dies while a job runs gets the job killed and re-run in-process (outputs are written atomically and
training resumes from its checkpoint). ``KDBENCH_WARM_WORKER=0`` turns it off; it is off under
``torchrun`` (``WORLD_SIZE`` > 1) and inside SLURM jobs (``SLURM_JOB_ID``; every job has a fresh allocation
there; ``KDBENCH_WARM_WORKER=1`` turns it on anyway). Each job's log says where it ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

SWITCH = "KDBENCH_WARM_WORKER"
IDLE_ENV = "KDBENCH_WARM_WORKER_IDLE"
DEFAULT_IDLE_S = 120.0
START_TIMEOUT_S = 60.0      # for a new server to listen
REPLY_TIMEOUT_S = 30.0      # for a listening server to start the job
CHECK_EVERY_S = 5.0
IMPORT_ENV_PREFIXES = ("TORCH", "PYTORCH", "OMP", "MKL", "KMP", "OPENBLAS", "CUDA", "HF_", "HUGGINGFACE",
                       "TRANSFORMERS", "TOKENIZERS", "PYTHON", "KDBENCH", "LD_", "LANG", "LC_")
# What the server imports before it takes jobs. pandas is left out on purpose: it starts pyarrow's jemalloc
# thread, and only profiling and curriculum runs need it.
PRELOAD_MODULES = ("torch", "numpy", "safetensors.torch", "tokenizers", "tqdm", "nltk.stem.porter",
                   "rapidfuzz.distance", "transformers", "kdbench.cli", "kdbench.stages", "kdbench.train",
                   "kdbench.generation", "kdbench.teacher_cache", "kdbench.difficulty", "kdbench.metrics",
                   "kdbench.evals", "kdbench.data.sources", "kdbench.data.synthetic")
PRELOAD_TRANSFORMERS = ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "PreTrainedTokenizerFast",
                        "TokenizersBackend", "GenerationConfig", "LlamaConfig", "LlamaForCausalLM")
_HEADER = struct.Struct("!Q")       # payload length, sent with the three descriptors
_REPLY = struct.Struct("!cq")       # b"P" child pid | b"X" exit status (negative: killed by that signal) | b"E"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- where and whether
def disabled_reason(env) -> str | None:
    switch = env.get(SWITCH, "").strip().lower()
    if switch in _OFF:
        return f"{SWITCH}={env.get(SWITCH)}"
    try:
        if int(env.get("WORLD_SIZE") or 1) > 1 or "TORCHELASTIC_RUN_ID" in env:
            return "running under torchrun"
    except ValueError:
        return "WORLD_SIZE is not a number"
    if env.get("SLURM_JOB_ID") and switch not in _ON:
        return "inside a SLURM job"
    if not (hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds") and hasattr(os, "fork")):
        return "no Unix sockets or fork on this platform"
    return None


def worker_key(cwd: str, env) -> str:
    """Hash of what a warm process could disagree with a fresh one on (see the module docstring)."""
    digest = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            digest.update(str(part).encode("utf-8", "surrogateescape") + b"\0")

    add(sys.executable, sys.version, sys.flags, sorted(getattr(sys, "_xoptions", {}).items()), cwd, os.getuid())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        add(path.relative_to(package))
        digest.update(path.read_bytes())
    for entry in sys.path:
        if entry.endswith("-packages") and os.path.isdir(entry):
            add(entry, os.stat(entry).st_mtime_ns)
    add(os.getpriority(os.PRIO_PROCESS, 0))
    if hasattr(os, "sched_getaffinity"):
        add(sorted(os.sched_getaffinity(0)))
    for name in sorted(env):
        if name.startswith(IMPORT_ENV_PREFIXES) and not name.startswith(SWITCH):
            add(name, env[name])
    return digest.hexdigest()


def _private_dir(base: str) -> Path | None:
    path = Path(base) / f"kdbench-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def socket_path(key: str, env) -> Path | None:
    """``<private dir>/<key prefix>.sock``, within the 108-byte limit of a Unix socket address."""
    for base in (env.get("XDG_RUNTIME_DIR"), "/tmp"):
        directory = _private_dir(base) if base else None
        if directory is not None:
            path = directory / f"{key[:24]}.sock"
            if len(os.fsencode(path)) <= 107:
                return path
    return None


def _note(message: str) -> None:
    print(f"kdbench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- client
def run_job(argv: list[str]) -> int | None:
    """Run ``kdbench <argv>`` in the warm worker and return its exit status; None: run it in-process."""
    if disabled_reason(os.environ):
        return None
    try:
        cwd = os.getcwd()
        key = worker_key(cwd, os.environ)
        path = socket_path(key, os.environ)
        if path is None:
            _note("warm worker: no private runtime directory; running in-process")
            return None
        sock = _connect(path) or _start_and_connect(path, key)
    except Exception as exc:  # a broken worker never fails a job
        _note(f"warm worker unavailable ({type(exc).__name__}: {exc}); running in-process")
        return None
    if sock is None:
        return None
    with sock:
        return _submit(sock, argv, key, cwd, path)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except OSError:
        sock.close()
        return None
    return sock


def _start_and_connect(path: Path, key: str) -> socket.socket | None:
    """Start the server (one client at a time: a lock file beside the socket) and wait until it listens."""
    import fcntl

    deadline = time.monotonic() + START_TIMEOUT_S
    with open(path.with_suffix(".lock"), "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:            # another job is starting it
                sock = _connect(path)
                if sock is not None:
                    return sock
                if time.monotonic() > deadline:
                    _note("warm worker: another job's start timed out; running in-process")
                    return None
                time.sleep(0.05)
        sock = _connect(path)
        if sock is not None:
            return sock
        server = _spawn(path, key)
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock is not None:
                return sock
            if server.poll() is not None:
                _note(f"warm worker exited at start (status {server.returncode}, see {path.with_suffix('.log')}); "
                      "running in-process")
                return None
            time.sleep(0.05)
    _note(f"warm worker not ready after {START_TIMEOUT_S:.0f} s; running in-process")
    return None


def _spawn(path: Path, key: str):
    import subprocess

    log = path.with_suffix(".log")
    with contextlib.suppress(FileNotFoundError):
        if log.stat().st_size > 1 << 20:
            log.unlink()
    for old in path.parent.glob("*.log"):      # the logs and lock files of workers gone for a week
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > 7 * 86400 and not old.with_suffix(".sock").exists():
                old.unlink()
                old.with_suffix(".lock").unlink(missing_ok=True)
    with open(log, "ab") as out:
        flags = getattr(subprocess, "_args_from_interpreter_flags", list)()   # -O, -B, -X ...: the key has them
        return subprocess.Popen([sys.executable, *flags, "-m", "kdbench.worker",
                                 "serve", "--socket", os.fspath(path), "--key", key],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, close_fds=True,
                                start_new_session=True)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _submit(sock: socket.socket, argv: list[str], key: str, cwd: str, path: Path) -> int | None:
    try:
        umask = os.umask(0)
        os.umask(umask)
        payload = json.dumps({"key": key, "argv": argv, "sys_argv": sys.argv, "cwd": cwd, "env": dict(os.environ),
                              "umask": umask}).encode("utf-8", "surrogatepass")
        sock.settimeout(REPLY_TIMEOUT_S)        # a stuck server must not hold the job
        socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
        sock.sendall(payload)
        kind, pid = _REPLY.unpack(_recv_exact(sock, _REPLY.size))
        sock.settimeout(None)
    except Exception as exc:  # nothing runs yet: a broken worker never fails a job
        _note(f"warm worker did not take the job ({type(exc).__name__}: {exc}); running in-process")
        return None
    if kind != b"P":
        _note(f"warm worker refused the job (see {path.with_suffix('.log')}); running in-process")
        return None
    _note(f"running in the warm worker as pid {pid} ({SWITCH}=0 runs jobs in-process)")
    pending: list[int] = []
    previous = {}

    def forward(signum, frame):
        pending.append(signum)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)

    for signum in _FORWARDED:
        previous[signum] = signal.signal(signum, forward)
    try:
        kind, status = _REPLY.unpack(_recv_exact(sock, _REPLY.size))
    except OSError:
        kind, status = None, None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if kind != b"X":
        # The server died while the job ran: stop the job and let the caller run it again in-process
        # (outputs are written atomically; training resumes from its last checkpoint).
        _kill_and_wait(pid)
        if pending:
            _die_of(pending[0])
        _note("warm worker lost while the job ran; running it again in-process")
        return None
    if status < 0:
        _die_of(-status)
    return status


def _kill_and_wait(pid: int, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _die_of(signum: int) -> None:
    """End this process by ``signum``, as the job's own process would have ended."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(5)
    os._exit(128 + signum)


# --------------------------------------------------------------------------- server
def _log(message: str) -> None:
    print(f"[kdbench worker {os.getpid()} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def preload() -> list[str]:
    """Import what the jobs use; returns the names that failed (the jobs import those themselves)."""
    import importlib

    failed = []
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing optional module only costs the job its import
            failed.append(f"{name} ({type(exc).__name__})")
    transformers = sys.modules.get("transformers")
    for name in PRELOAD_TRANSFORMERS if transformers else ():
        try:
            getattr(transformers, name)
        except Exception as exc:  # noqa: BLE001
            failed.append(f"transformers.{name} ({type(exc).__name__})")
    return failed


class _Job:
    def __init__(self, conn: socket.socket, pid: int, argv: list[str]):
        self.conn: socket.socket | None = conn
        self.pid = pid
        self.argv = argv
        self.started = time.monotonic()
        self.pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self.pidfd = os.pidfd_open(pid)


class Server:
    def __init__(self, path: Path, key: str, idle_s: float, start_env: dict[str, str], import_env: dict[str, str]):
        self.path, self.key, self.idle_s = path, key, idle_s
        self.start_env = start_env      # the environment before the imports (the one the key was made from)
        self.import_env = import_env    # what the imports added to it (torch sets TORCHINDUCTOR_CACHE_DIR)
        self.cwd = os.getcwd()
        self.jobs: list[_Job] = []
        self.listener: socket.socket | None = None
        self.inode = None
        self.stopping = False

    def bind(self) -> None:
        # The client that started this server holds the start lock: a socket file here belongs to a dead server.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(os.fspath(self.path))
        finally:
            os.umask(old)
        self.listener.listen(64)
        self.inode = os.stat(self.path).st_ino

    def _still_valid(self) -> str | None:
        try:
            if os.stat(self.path).st_ino != self.inode:
                return "socket replaced"
        except FileNotFoundError:
            return "socket removed"
        if not os.path.isdir(self.cwd):
            return "working directory removed"
        if worker_key(self.cwd, self.start_env) != self.key:
            return "sources or installed packages changed"
        return None

    def stop_accepting(self, reason: str) -> None:
        if self.listener is None:
            return
        _log(f"stops taking jobs: {reason}")
        self.listener.close()
        self.listener = None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)

    def loop(self) -> None:
        last_active = next_check = time.monotonic()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        while True:
            now = time.monotonic()
            if self.stopping:
                self.stop_accepting("SIGTERM")
            if now >= next_check and self.listener is not None:
                next_check = now + CHECK_EVERY_S
                reason = self._still_valid()
                if reason:
                    self.stop_accepting(reason)
            if not self.jobs and (self.listener is None or now - last_active > self.idle_s):
                if self.listener is not None:
                    self.stop_accepting(f"idle for {self.idle_s:.0f} s")
                return
            waitables = [j.conn for j in self.jobs if j.conn is not None]
            waitables += [j.pidfd for j in self.jobs if j.pidfd is not None]
            if self.listener is not None:
                waitables.append(self.listener)
            polling = any(j.pidfd is None for j in self.jobs)
            try:
                ready, _, _ = select.select(waitables, [], [], 0.05 if polling else 1.0)
            except InterruptedError:
                continue
            for item in ready:
                if item is self.listener:
                    self._accept()
                    last_active = time.monotonic()
                elif isinstance(item, socket.socket):
                    self._client_event(item)
            if self._reap():
                last_active = time.monotonic()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(10)
            _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             struct.calcsize("3i")))
            if uid != os.getuid():
                raise PermissionError(f"connection from uid {uid}")
            header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
            if len(header) != _HEADER.size or len(fds) != 3:
                raise ValueError("malformed request")
            request = json.loads(_recv_exact(conn, _HEADER.unpack(header)[0]).decode("utf-8", "surrogatepass"))
            if request.get("key") != self.key:
                raise ValueError("request for another key")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                # The server's sockets are not the job's: a child holding a client's connection would keep the
                # server from seeing that client go away.
                sockets = [self.listener, conn] + [j.conn for j in self.jobs if j.conn is not None]
                server_fds = [s.detach() for s in sockets] + [j.pidfd for j in self.jobs if j.pidfd is not None]
                _child(request, fds, server_fds, self.import_env)
            job = _Job(conn, pid, request["argv"])
            self.jobs.append(job)
            _log(f"job {' '.join(request['argv'][:2])} -> pid {pid}")
            conn.settimeout(None)
            conn.sendall(_REPLY.pack(b"P", pid))
        except Exception as exc:  # noqa: BLE001 - one bad request never stops the server
            _log(f"request refused: {type(exc).__name__}: {exc}")
            if not any(j.conn is conn for j in self.jobs):
                with contextlib.suppress(OSError):
                    conn.sendall(_REPLY.pack(b"E", 0))
                conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _client_event(self, conn: socket.socket) -> None:
        job = next(j for j in self.jobs if j.conn is conn)
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if data:
            return
        # The client went away before the job ended (killed, or Snakemake interrupted): so does the job.
        _log(f"client of pid {job.pid} gone; killing its process group")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)
        conn.close()
        job.conn = None

    def _reap(self) -> bool:
        finished = False
        for job in list(self.jobs):
            try:
                pid, status = os.waitpid(job.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = job.pid, 255 << 8
            if pid == 0:
                continue
            finished = True
            code = os.waitstatus_to_exitcode(status)
            _log(f"pid {pid} ended with {code} after {time.monotonic() - job.started:.2f} s")
            if job.conn is not None:
                with contextlib.suppress(OSError):
                    job.conn.sendall(_REPLY.pack(b"X", code))
                job.conn.close()
            if job.pidfd is not None:
                os.close(job.pidfd)
            self.jobs.remove(job)
        return finished


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(request: dict, fds: list[int], server_fds: list[int], import_env: dict[str, str]):
    """In the forked child: become the job, run it, and never return to the server's loop."""
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)
        for fd in server_fds:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.umask(request["umask"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**import_env, **request["env"]})   # as after the same imports in a fresh process
        sys.argv = list(request["sys_argv"])
        if os.isatty(1):
            sys.stdout.reconfigure(line_buffering=True)
        if "numpy" in sys.modules:   # the global NumPy generator of a fresh process is seeded from the OS
            sys.modules["numpy"].random.seed()
        from kdbench import cli

        code = cli.run(request["argv"])
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        _die_of(signal.SIGINT)
    except BaseException:  # noqa: BLE001 - as an uncaught exception ends a fresh interpreter
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            import atexit

            atexit._run_exitfuncs()
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(path: Path, key: str, idle_s: float) -> int:
    t0 = time.perf_counter()
    start_env = dict(os.environ)
    failed = preload()
    import_env = {k: v for k, v in os.environ.items() if start_env.get(k) != v}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        _log("CUDA was initialised while importing; a fork would be unsafe: not serving")
        return 3
    if worker_key(os.getcwd(), start_env) != key:
        _log("sources changed while starting; not serving")
        return 4
    server = Server(path, key, idle_s, start_env, import_env)
    server.bind()
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
    _log(f"ready in {time.perf_counter() - t0:.1f} s on {path} (cwd {server.cwd}, {threads} threads, "
         f"idle timeout {idle_s:.0f} s){'; not preloaded: ' + ', '.join(failed) if failed else ''}")
    try:
        server.loop()
    finally:
        server.stop_accepting("exiting")
    _log("exit")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kdbench.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the server (the first job starts it; not for direct use)")
    serve_cmd.add_argument("--socket", required=True, type=Path)
    serve_cmd.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    idle_s = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_S)
    return serve(args.socket, args.key, idle_s)


if __name__ == "__main__":
    sys.exit(main())
