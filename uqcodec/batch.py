"""Batch mode of the command line: many files on a small process pool.

``uqcodec compress a.png b.png DIR ...`` (and ``decompress``) code every file in
its own task on ``jobs`` worker processes (default: 2, or fewer CPUs), each with
``UQCODEC_THREADS=1``. A bad file does not stop the batch: failures are collected
and reported at the end, one line each, and the exit code is 1. Every output is
written atomically (temporary file + rename) by the worker that made it; an
interrupted batch (Ctrl-C) stops the workers, which remove their temporary files.
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


_busy = False


def _on_signal(signum, frame):
    """Workers: inside a task, unwind (atomic_write deletes its temporary file);
    between tasks, just leave."""
    if _busy:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _init_worker(threads):
    if threads:
        os.environ["UQCODEC_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


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
    from . import api, imageio
    try:
        with open(src, "rb") as f:
            data = f.read()
        pixels = api.decompress(data, **opts)
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
            if key == os.path.abspath(src):
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
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool
    ex = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(1,))
    try:
        futures = {ex.submit(_task, kind, job): job for job in todo}
        for f in as_completed(futures):
            try:
                done(f.result())
            except BrokenProcessPool:
                done((futures[f][0], False, "worker process died (out of memory?)", []))
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        _stop_workers()
        raise
    ex.shutdown()


def _stop_workers(timeout=30):
    """End the pool's workers with SIGTERM (they delete their temporary files first)."""
    kids = multiprocessing.active_children()
    for p in kids:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except OSError:
            pass
    for p in kids:
        p.join(timeout)
        if p.is_alive():
            p.kill()


def message(src, msg):
    """One failure line (without the 'uqcodec: error:' prefix)."""
    return msg if msg.startswith(src) else f"{src}: {msg}"
