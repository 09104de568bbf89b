"""Batch mode of the command line: many files on a small process pool.

``uqcodec compress a.png b.png DIR ...`` (and ``decompress``) code every file in
its own task on ``jobs`` worker processes (default: 2, or fewer CPUs), each with
``UQCODEC_THREADS=1``. A bad file does not stop the batch: failures are collected
and reported at the end, one line each, and the exit code is 1. Every output is
written atomically (temporary file + rename) by the worker that made it; an
interrupted batch (Ctrl-C, or SIGTERM to the parent: what `timeout`, systemd and
`docker stop` send) stops the workers, which remove their temporary files, and waits
for them, so nothing is written after the parent exits. A worker that dies (killed, or
by the out-of-memory killer) fails its own file only: a new worker takes the rest. The
pool is plain processes and pipes (no queues, no semaphores), and a worker also ends
when its parent dies (PR_SET_PDEATHSIG).
"""
import multiprocessing
import os
import signal
import sys

from .errors import CodecError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
              ".pgm", ".pnm", ".tga")
UQ_EXTS = (".uq",)


def expand(args, exts):
    """Paths and directories -> (list of files, whether any directory was given).

    A directory contributes its files with one of ``exts`` (not recursive, sorted)."""
    files, had_dir = [], False
    for a in args:
        if os.path.isdir(a):
            had_dir = True
            files += sorted(os.path.join(a, f) for f in os.listdir(a)
                            if f.lower().endswith(exts) and not f.startswith(".")
                            and os.path.isfile(os.path.join(a, f)))
        else:
            files.append(a)
    return files, had_dir


def _describe(e):
    """An exception -> the one-line message the CLI would print for it."""
    if isinstance(e, CodecError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory"
    if isinstance(e, OSError):
        return f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")
    return f"internal error: {type(e).__name__}: {e}"


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C (workers stopped, temporary files removed); exit 143."""


def _raise_terminated(signum, frame):
    raise Terminated()


def stop_on_sigterm():
    """From now on SIGTERM raises ``Terminated`` in the main thread (the clean-up of an
    interrupt runs, then the command exits with 143)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


_busy = False


def _on_signal(signum, frame):
    """Workers: inside a task, unwind (atomic_write deletes its temporary file);
    between tasks, just leave."""
    if _busy:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _init_worker(threads, parent=None):
    if threads:
        os.environ["UQCODEC_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    if parent is not None:  # die with the parent, however it ends (Linux)
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # it died before prctl
            os._exit(1)


def _worker_main(conn, kind, threads, parent):
    """A pool worker: jobs from the pipe, one at a time, results back; None: exit."""
    _init_worker(threads, parent)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if job is None:
            os._exit(0)
        conn.send(_task(kind, job))


def _task(kind, job):
    """Run one job in a worker; an interrupt ends the worker quietly after clean-up."""
    global _busy
    try:
        _busy = True
        return WORKERS[kind](job)
    except KeyboardInterrupt:
        os._exit(130)
    finally:
        _busy = False


def _compress_one(job):
    src, out, opts = job
    from . import api, imageio
    try:
        data, info = api.compress_with_info(src, **opts)
        imageio.atomic_write(out, data)
        h = api.read_header(data)
        msg = (f"{out}: {len(data)} bytes, {8 * len(data) / (h.width * h.height):.4f} bpp "
               f"({info['model']}, {h.quantizer})")
        return src, True, msg, [f"{src}: {n}" for n in info["warnings"]]
    except Exception as e:  # noqa: BLE001 - reported per file
        return src, False, _describe(e), []


def _decompress_one(job):
    src, out, opts = job
    from . import api, container, imageio
    try:
        with container.open_file(src) as f:  # bounded reads, streams tile by tile
            pixels = api.decompress(f, **opts)
        imageio.atomic_write(out, imageio.png_bytes(pixels))
        return src, True, f"{out}: {pixels.shape[1]}x{pixels.shape[0]}", []
    except Exception as e:  # noqa: BLE001 - reported per file
        return src, False, _describe(e), []


WORKERS = {"compress": _compress_one, "decompress": _decompress_one}


def default_jobs():
    return max(1, min(2, os.cpu_count() or 1))


def run(kind, jobs, jobs_n=None, echo=print, warn=None, check_output=None):
    """Run ``kind`` ("compress" | "decompress") over ``jobs`` = [(src, out, opts)].

    ``check_output(out)`` raises CodecError for an output that must not be written
    (exists without --force, ...); such files fail without being coded. Returns the
    list of (src, message) failures, in input order."""
    from tqdm import tqdm
    warn = warn or (lambda m: print(m, file=sys.stderr))
    failures, todo, seen = {}, [], {}
    for src, out, opts in jobs:
        try:
            key = os.path.abspath(out)
            if key == os.path.abspath(src) or _same_file(out, src):
                raise CodecError(f"{out}: the output would overwrite the input")
            if key in seen:
                raise CodecError(f"{out}: also the output of {seen[key]}")
            seen[key] = src
            if check_output:
                check_output(out)
            todo.append((src, out, opts))
        except CodecError as e:
            failures[src] = str(e)
    n = min(jobs_n or default_jobs(), len(todo)) or 1
    bar = tqdm(total=len(jobs), unit="file", desc=kind, disable=None, file=sys.stderr,
               leave=False)
    bar.update(len(failures))

    def done(result):
        src, ok, msg, notes = result
        for m in notes:
            bar.write(f"uqcodec: warning: {m}", file=sys.stderr)
        if ok:
            bar.write(msg, file=sys.stdout)
        else:
            failures[src] = msg
        bar.update(1)

    try:
        if n == 1:
            for job in todo:
                done(WORKERS[kind](job))
        else:
            _pool(kind, todo, n, done)
    finally:
        bar.close()
    order = {src: i for i, (src, _, _) in enumerate(jobs)}
    return sorted(failures.items(), key=lambda kv: order[kv[0]])


def _pool(kind, todo, n, done):
    """Run ``todo`` on ``n`` worker processes (spawned, one pipe each, one job at a time).
    A worker that dies fails the job it had, and a new one takes its place while jobs
    remain; an exception here (Ctrl-C, SIGTERM: ``Terminated``) stops every worker and
    waits for it before it propagates."""
    from collections import deque
    from multiprocessing.connection import wait
    ctx = multiprocessing.get_context("spawn")
    pending, workers = deque(todo), {}  # conn -> [process, job or None]
    starts = [0]

    def start():
        starts[0] += 1
        if starts[0] > n + len(todo):  # workers that die before any job: give up
            while pending:
                done((pending.popleft()[0], False, "worker processes keep dying", []))
            return
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=_worker_main, args=(child_end, kind, 1, os.getpid()),
                        daemon=True)
        p.start()
        child_end.close()
        workers[parent_end] = [p, None]

    try:
        for _ in range(min(n, len(pending))):
            start()
        while True:
            for conn, w in list(workers.items()):  # idle workers take the next jobs
                if w[1] is None and pending:
                    if not w[0].is_alive():  # died idle: replaced, nobody's file fails
                        _close(conn, w[0])
                        del workers[conn]
                        start()
                        continue
                    w[1] = pending.popleft()
                    try:
                        conn.send(w[1])
                    except OSError:  # it died meanwhile: seen below
                        pass
            if not any(w[1] is not None for w in workers.values()):
                if pending and workers:
                    continue  # (a new worker takes the next job)
                break
            ready = set(wait(list(workers) + [w[0].sentinel for w in workers.values()]))
            for conn, (p, job) in list(workers.items()):
                if conn in ready:
                    try:
                        result = conn.recv()
                    except (EOFError, OSError):
                        result = None
                    if result is not None:
                        workers[conn][1] = None
                        done(result)
                        continue
                elif p.sentinel not in ready:
                    continue
                # the worker died: its own job fails, a new worker takes the others
                p.join(5)
                if job is not None:
                    done((job[0], False, f"worker process died ({_death(p.exitcode)})", []))
                _close(conn, p)
                del workers[conn]
                if pending:
                    start()
    except BaseException:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:  # a second Ctrl-C or SIGTERM must not cut the clean-up short
            _stop(workers)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        raise
    for conn, (p, _) in workers.items():  # all done: let the workers leave
        try:
            conn.send(None)
        except OSError:
            pass
    for conn, (p, _) in workers.items():
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
        conn.close()


def _close(conn, p):
    conn.close()
    if p.is_alive():
        p.kill()
    p.join()


def _death(code):
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (": out of memory?" if -code == signal.SIGKILL else "")
    return f"exit code {code}"


def _stop(workers, timeout=30):
    """End the workers with SIGTERM (they delete their temporary files first) and wait
    for them; SIGKILL after ``timeout`` seconds."""
    for conn, (p, _) in workers.items():
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except OSError:
                pass
    for conn, (p, _) in workers.items():
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
        conn.close()


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def message(src, msg):
    """One failure line (without the 'uqcodec: error:' prefix)."""
    return msg if msg.startswith(src) else f"{src}: {msg}"
