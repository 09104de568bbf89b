"""Evaluation on real files: our models and classic codecs over a folder of images.

``evaluate`` compresses every image with every setting (a model + quantizer, or a
classic codec + quality), decodes it and records bpp (real file size, header
included), PSNR and MS-SSIM on 8-bit RGB and encode/decode wall time (in memory,
models warm). ``curves`` groups the means into rate-distortion curves; ``report``
writes them out.
"""
import os
import time

import numpy as np

from . import imageio, zoo
from .errors import CodecError
from .metrics import BD_METHOD, ms_ssim, psnr
from .report import PAPER_NAMES

__all__ = ["psnr", "measure_model", "select_models", "plan", "evaluate", "curves"]

# a variable-rate model (or rate set) is measured at these qualities: 11 points of one curve
EVAL_QUALITIES = tuple(float(q) for q in range(11))
MEASURES = ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s")


def measure_model(model_dir, folder, seed=1, quantizer="uq", progress=True, quality=None):
    """Mean bpp (real file size, header included) and mean PSNR over a folder
    (``quality``: of a variable-rate model)."""
    from .api import compress_with_info, decompress
    from .training.data import list_images
    files = list_images(folder)
    bpps, psnrs = [], []
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc=os.path.basename(model_dir), unit="img", leave=False)
    for i, f in enumerate(it):
        rgb, _, _ = imageio.read_image(f)
        data, _ = compress_with_info(rgb, model=model_dir, seed=seed + i, quantizer=quantizer,
                                     quality=quality)
        out = decompress(data, model=model_dir, rgb=True)
        bpps.append(8.0 * len(data) / (rgb.shape[0] * rgb.shape[1]))
        psnrs.append(psnr(rgb, out))
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "images": len(files)}


def curve_name(arch, training, quantizer, refine=0, variable=False):
    """'hyperprior UN+UQ+SR': family + the paper's name of training and quantizer
    (+ ', refined N' for encoder-side refinement with N steps; + ', variable rate' for
    the points of a variable-rate model)."""
    name = f"{arch} {PAPER_NAMES.get((training, quantizer), f'{training}+{quantizer}')}"
    return name + (f", refined {refine}" if refine else "") + (", variable rate" if variable
                                                               else "")


def select_models(spec):
    """'all' | 'none' | 'default' (the default codec's models) | 'NAME,NAME|DIR,...' ->
    model cards."""
    spec = (spec or "all").strip()
    if spec == "all":
        return zoo.list_models()
    if spec == "default":
        return zoo.default_variable() or [zoo.default_model()]
    if spec == "none":
        return []
    return [zoo.read_card(zoo.resolve(n.strip())) for n in spec.split(",") if n.strip()]


def plan(cards, paper=False, refine=0):
    """(card, quantizer, refine steps, quality) settings: every model with 'uq'; with
    ``paper`` also with 'round' (UN+Q for 'un' models, UN+SR+Q for 'sr' models); with
    ``refine`` also the 'sr' models (and rate sets) of the families that refine, with
    that many steps of encoder-side refinement. A variable-rate model gives one setting
    per quality of EVAL_QUALITIES (quality None: a fixed-rate model). With ``paper``, the
    variable-rate sets of a family (one per training) are measured on one lambda grid
    instead, so that UN+Q, UN+UQ, UN+UQ+SR and UN+SR+Q meet at matched points: the lambdas of
    EVAL_QUALITIES over the union of the family's ranges that fall in the set's range,
    the set's own two ends, and the lambda of each fixed-rate model of the family in its
    range. A default codec that mixes families (``zoo.default_variable``: the best model of
    each range) is one more rate set (without ``paper``) when all its models are among
    ``cards`` (the only one when they are all the variable-rate ``cards``: ``--models
    default``), its curve named after its families ("context+hyperprior UN+UQ+SR")."""
    from .rates import quality_lambda, set_quality
    fixed = [c for c in cards if not c.get("lambda_range")]
    sets = {}
    for c in cards:  # variable-rate models of one family and training: one rate set
        if c.get("lambda_range"):
            sets.setdefault((c.get("arch"), c.get("training")), []).append(c)
    cards = fixed + [_set_card(s) for s in sets.values()]
    default = zoo.default_variable()  # the default codec, when it mixes families: a set too
    given = {c["path"] for s in sets.values() for c in s}
    if (not paper and len({c.get("arch") for c in default}) > 1
            and all(c["path"] in given for c in default)):
        if given == {c["path"] for c in default}:  # --models default: that codec alone
            cards = fixed
        cards.append(_set_card(default))
    span = {}  # family -> the union of its variable-rate sets' lambda ranges
    for c in cards:
        if c.get("lambda_range"):
            lo, hi = c["lambda_range"]
            a, b = span.get(c.get("arch"), (lo, hi))
            span[c.get("arch")] = (min(a, lo), max(b, hi))

    def qualities(c):
        if not c.get("lambda_range"):
            return (None,)
        if not paper:
            return EVAL_QUALITIES
        lo, hi = c["lambda_range"]
        grid = [quality_lambda(q, *span[c.get("arch")]) for q in EVAL_QUALITIES]
        grid += [f["lambda"] for f in fixed if f.get("lambda") and f.get("arch") == c.get("arch")]
        q0, q1 = EVAL_QUALITIES[0], EVAL_QUALITIES[-1]
        inside = {min(q1, max(q0, round(set_quality(l, (lo, hi)), 12))) for l in grid
                  if lo * (1 - 1e-9) <= l <= hi * (1 + 1e-9)}
        return sorted(inside | {q0, q1})

    def at(c, quantizer, steps=0):
        return [(c, quantizer, steps, q) for q in qualities(c)]
    out = [s for c in cards for s in at(c, "uq")]
    if paper:
        out += [s for c in cards for s in at(c, "round")]
    if refine:
        out += [s for c in cards if _can_refine(c) and c.get("training") == "sr"
                for s in at(c, "uq", refine)]
    return out


def _can_refine(card):
    from . import families
    try:
        return families.get(card.get("arch")).refine
    except CodecError:
        return False


def _set_card(cards):
    """One card for variable-rate models that form a rate set (``rateset.RateSet``): its
    ``path`` is the tuple of their directories, which ``api.compress`` takes as a set."""
    from .rates import set_edges
    cards = sorted(cards, key=lambda c: c["lambda_range"][0])
    if len(cards) == 1:
        return cards[0]
    edges = set_edges([c["lambda_range"] for c in cards])
    return {"name": "+".join(c["name"] for c in cards), "path": tuple(c["path"] for c in cards),
            # one family, or the families of a default codec that mixes them
            "arch": "+".join(dict.fromkeys(c.get("arch") for c in cards)),
            "training": cards[0].get("training"),
            "lambda_range": [edges[0], edges[-1]],
            "steps": max(c.get("steps") or 0 for c in cards)}


def _timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


COLUMNS = ("image", "curve", "kind", "setting", "arch", "training", "quantizer", "refine",
           "quality",
           "lambda", "steps", "width", "height", "bytes", "bpp", "psnr", "ms_ssim", "encode_s",
           "decode_s")


def _row(name, img, rgb, data, out, enc_s, dec_s, meta):
    h, w = rgb.shape[:2]
    if out.shape != rgb.shape:
        raise CodecError(f"{name}: decoded shape {out.shape} != {rgb.shape} for {img}")
    row = dict.fromkeys(COLUMNS, "")
    row.update(meta)
    row.update({"image": os.path.basename(img), "curve": name, "width": w, "height": h,
                "bytes": len(data), "bpp": 8.0 * len(data) / (h * w), "psnr": psnr(rgb, out),
                "ms_ssim": ms_ssim(rgb, out), "encode_s": enc_s, "decode_s": dec_s})
    return row


def _warm_up(path, quantizer, refine=0):
    """Trace the model's TensorFlow functions once, outside the timed loop."""
    from . import api
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data, _ = api.compress_with_info(rgb, model=path, seed=0, quantizer=quantizer,
                                     refine=min(refine, 2))
    api.decompress(data, model=path, rgb=True)


def evaluate(files, settings, classics, seed=1, progress=True):
    """Rows (dicts) of per-image results. ``settings``: (card, quantizer, refine, quality);
    ``classics``: baselines.Classic objects. Image i uses dither seed ``seed + i``."""
    from tqdm import tqdm

    from . import api
    from .rates import quality_lambda
    total = len(files) * (len(settings) + sum(len(c.qualities) for c in classics))
    bar = tqdm(total=total, unit="code", disable=not progress, dynamic_ncols=True)
    rows = []
    try:
        for card, quantizer, refine in dict.fromkeys(
                (c["path"], qz, r) for c, qz, r, _ in settings):
            bar.set_description("loading " + (os.path.basename(card) if isinstance(card, str)
                                              else "rate set"))
            _warm_up(card, quantizer, refine)
        for i, f in enumerate(files):
            rgb, _, _ = imageio.read_image(f)
            for card, quantizer, refine, quality in settings:
                setting = card["name"] + (f" q{quality:g}" if quality is not None else "")
                bar.set_description(f"{os.path.basename(f)} {setting} {quantizer}"
                                    + (f" refine {refine}" if refine else ""))
                (data, _), enc = _timed(api.compress_with_info, rgb, model=card["path"],
                                        seed=seed + i, quantizer=quantizer, refine=refine,
                                        quality=quality)
                out, dec = _timed(api.decompress, data, model=card["path"], rgb=True)
                rows.append(_row(curve_name(card.get("arch"), card.get("training"), quantizer,
                                            refine, quality is not None),
                                 f, rgb, data, out, enc, dec,
                                 {"kind": "model", "setting": setting,
                                  "arch": card.get("arch"), "training": card.get("training"),
                                  "quantizer": quantizer, "refine": refine,
                                  "quality": "" if quality is None else quality,
                                  "lambda": (card.get("lambda") if quality is None
                                             else quality_lambda(
                                                 quality, *card["lambda_range"])),
                                  "steps": card.get("steps")}))
                bar.update()
            for c in classics:
                bar.set_description(f"{os.path.basename(f)} {c.key}")
                for q in c.qualities:
                    data, enc = _timed(c.encode, rgb, q)
                    out, dec = _timed(c.decode, data)
                    rows.append(_row(c.name, f, rgb, data, out, enc, dec,
                                     {"kind": "classic", "setting": f"q{q}", "quality": q}))
                    bar.update()
    finally:
        bar.close()
    return rows


def _mean(values):
    v = np.asarray(values, np.float64)
    return float(np.mean(v)) if len(v) else float("nan")


def curves(rows):
    """Mean points per (curve, setting) -> list of curves
    {name, kind, arch, training, quantizer, points: [{setting, bpp, psnr, ...}]}.
    Model curves get one point per lambda (if several models share a lambda: the one
    trained longest); every curve is sorted by bpp."""
    groups = {}
    for r in rows:
        groups.setdefault((r["curve"], r["setting"]), []).append(r)
    out = {}
    for (name, setting), rs in groups.items():
        r0 = rs[0]
        point = {"setting": setting, "images": len(rs),
                 **{m: _mean([r[m] for r in rs]) for m in MEASURES}}
        if r0["kind"] == "model":
            point.update({"lambda": r0["lambda"], "steps": r0["steps"]})
        else:
            point["quality"] = r0["quality"]
        c = out.setdefault(name, {"name": name, "kind": r0["kind"], "arch": r0["arch"],
                                  "training": r0["training"], "quantizer": r0["quantizer"],
                                  "refine": r0.get("refine") or 0,
                                  "variable": r0["kind"] == "model" and r0["quality"] != "",
                                  "points": [], "dropped": []})
        c["points"].append(point)
    for c in out.values():
        if c["kind"] == "model":
            best = {}
            for p in c["points"]:
                k = p["lambda"]
                if k not in best or (p["steps"] or 0) > (best[k]["steps"] or 0):
                    best[k] = p
            c["dropped"] = sorted(p["setting"] for p in c["points"] if p not in best.values())
            c["points"] = list(best.values())
        c["points"].sort(key=lambda p: (p["bpp"], str(p["setting"])))
    return list(out.values())


GRAD_DRAWS = 64  # noise draws per estimator in the gradient-bias table


def gradient_bias_md(cards, files, warn=print, draws=GRAD_DRAWS):
    """The gradient-bias table (``training/gradbias.py``) of the soft-rounding models in
    ``cards``, each a stage of training, on 8 crops of 128x128 from ``files`` (a variable-
    rate model at the middle of its range). Needs TensorFlow; else a note."""
    sr = [c for c in cards if c.get("training") == "sr"]
    if not sr:
        return None
    try:
        from .training import gradbias
        from .training.model import CompressionModel
        from .rates import DEFAULT_QUALITY, quality_lambda
    except CodecError as e:
        warn(f"no gradient-bias table: {e}")
        return f"Not measured: {e}"
    rng = np.random.default_rng(0)
    crops = []
    for f in files[:8]:
        im = imageio.read_image(f)[0]
        if min(im.shape[:2]) < 128:
            continue
        a, b = rng.integers(0, im.shape[0] - 127), rng.integers(0, im.shape[1] - 127)
        crops.append(im[a:a + 128, b:b + 128])
    if not crops:
        return "Not measured: no image is at least 128x128."
    x = np.stack(crops).astype(np.float32) / 255.0
    rows = []
    for c in sr:
        model = CompressionModel(c)
        model.load_weights_npz(os.path.join(c["path"], "weights.npz"))
        rate, lmbda = None, c.get("lambda")
        if c.get("lambda_range"):
            rate, lmbda = 0.5, quality_lambda(DEFAULT_QUALITY, *c["lambda_range"])
        rows.append((c["name"], c.get("steps"),
                     gradbias.gradient_bias(model, x, lmbda, c["alpha"], draws, rate=rate)))
    return (f"Mean of the lower-variance gradient (Agustsson & Theis) against the Monte Carlo "
            f"mean of the plain gradient, {draws} noise draws each, on {len(crops)} crops of "
            "128x128, every weight of the model; each model is a stage of training (its "
            "steps). Relative bias: |E[g_lv] - E[g]| / |E[g]|; MC noise floor: what the "
            "difference would be from the finite draws alone; variance per draw relative to "
            "|E[g]|^2.\n\n" + gradbias.table(rows))


def shown_dir(folder):
    """A folder (or file) as the results name it, never a path of this machine: relative
    to the current directory when it lies in it or beside it (``../shared/data/kodak``),
    else its name alone (``kodak``)."""
    path = os.path.abspath(folder)
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        rel = None
    if rel is not None and not os.path.isabs(rel) and rel.split(os.sep)[:2] != ["..", ".."]:
        return rel.replace(os.sep, "/")
    return os.path.basename(path) or path


def dataset_names(folders):
    """A results sub-folder name per image folder: its name (``kodak``, ``bsd68``);
    refused when two folders share one."""
    names = [os.path.basename(os.path.normpath(os.path.abspath(f))) for f in folders]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CodecError(f"two image folders are named {', '.join(twice)}: their results "
                         "would share a folder")
    return names


def _same_run(summary, settings):
    """Whether an earlier run's summary.json was made with these settings (models and
    their fingerprints, baselines, images, seed, paper, refine): then it is kept."""
    return all(summary.get(k) == v for k, v in settings.items())


def run_many(folders, out, force=False, progress=True, warn=print, command="uqcodec eval",
             **kw):
    """``uqcodec eval`` over several image folders: each folder's results go to
    ``out/NAME`` (``run``), then ``out/summary.md`` sums up the paper's comparison by family
    and dataset (with ``paper``). A folder whose results are already there from a run with
    the same settings is kept (so a long run can be resumed); other earlier results are
    refused without ``force``. Returns [(name, summary)]."""
    import json
    from . import report
    names = dataset_names(folders)
    results = []
    for i, (folder, name) in enumerate(zip(folders, names)):
        sub = os.path.join(out, name)
        path = os.path.join(sub, "summary.json")
        if not force and os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            if _same_run(old, run_settings(folder, **kw)):
                warn(f"{sub}: kept (an earlier run with the same models, images and settings)")
                results.append((name, old))
                continue
        if progress:
            print(f"[{i + 1}/{len(folders)}] {shown_dir(folder)} -> {sub}", flush=True)
        results.append((name, run(folder, sub, force=force, progress=progress, warn=warn,
                                  **kw)))
    if kw.get("paper"):
        files = {"summary.md": report.datasets_md(results, command)}
        try:
            files["summary.png"] = report.datasets_png(results)
        except ImportError:
            warn("matplotlib is not installed: no summary.png (pip install matplotlib)")
        report.write(out, files, True)
    return results


def run_settings(folder, models="all", baselines="jpeg,webp,avif,jxl", paper=False, seed=1,
                 limit=None, refine=0, anchors=None):
    """What decides the results of ``run`` besides the code: recorded in summary.json."""
    from .training.data import list_images
    try:
        files = list_images(folder)
    except ValueError:
        files = []
    files = files[:limit] if limit else files
    keys = [k.strip().lower() for k in (baselines or "").split(",") if k.strip()]
    return {"images": [os.path.basename(f) for f in files], "seed": seed, "paper": paper,
            "refine": refine, "baselines": [] if keys == ["none"] else keys,
            "models": [{"name": c["name"], "fingerprint": c.get("fingerprint")}
                       for c in select_models(models)]}


def is_kodak(files):
    """Whether the images are Kodak's (the published curves of the default anchors are
    measured on Kodak, so they are compared with no other set)."""
    return bool(files) and all(os.path.basename(f).startswith("kodim") for f in files)


def run(folder, out, models="all", baselines="jpeg,webp,avif,jxl", paper=False, force=False,
        seed=1, limit=None, anchors=None, progress=True, warn=print, refine=0):
    """The ``uqcodec eval`` command: measure, then write per_image.csv, summary.json,
    rd.png, bdrate.csv (and paper.md with ``paper``) into ``out``. Returns the summary."""
    import platform
    import PIL

    from . import baselines as B, report
    from .training import _tf
    from .training.data import list_images
    # one line naming the extra, before any work: MS-SSIM and the BD-rates need SciPy,
    # the gradient-bias table (--paper) TensorFlow
    _tf.require("uqcodec eval", ("scipy",))
    if paper:
        _tf.require("uqcodec eval --paper")
    report.check_out(out, force)
    if not os.path.isdir(folder):
        raise CodecError(f"{folder}: no such directory")
    try:
        files = list_images(folder)
    except ValueError:
        raise CodecError(f"{folder}: no images") from None
    files = files[:limit] if limit else files
    cards = select_models(models)
    if paper and not cards:
        raise CodecError("--paper needs models (--models all or a list)")
    keys = [k.strip().lower() for k in (baselines or "").split(",") if k.strip()]
    keys = [] if keys == ["none"] else keys
    skipped, classics = [], []
    for k in dict.fromkeys(keys):
        if k not in B.KEYS:
            raise CodecError(f"unknown baseline {k!r} (choose from {', '.join(B.KEYS)}, none)")
        why = B.available(k)
        if why:
            warn(f"skipping {k}: {why}")
            skipped.append(f"{k}: {why}")
        else:
            classics.append(B.make(k))
    if anchors is None:  # the published curves are Kodak's
        anchors = report.DEFAULT_ANCHORS if is_kodak(files) else "none"
    published = []
    if anchors and anchors != "none":
        if os.path.exists(anchors):
            published = report.read_published(anchors)
        else:
            warn(f"no published curves: {anchors} not found")
            skipped.append(f"published curves: {shown_dir(anchors)} not found")
    t0 = time.perf_counter()
    try:
        rows = evaluate(files, plan(cards, paper, refine), classics, seed=seed,
                        progress=progress)
    finally:
        for c in classics:
            getattr(c, "close", lambda: None)()
    wall = time.perf_counter() - t0
    cs = curves(rows)
    bdr = report.bd_rows(cs, published)
    meta = {"dir": shown_dir(folder), "n_images": len(files)}
    summary = {
        "command": "uqcodec eval", "dir": meta["dir"],
        **run_settings(folder, models, baselines, paper, seed, limit, refine),
        "wall_seconds": round(wall, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "threads": os.environ.get("UQCODEC_THREADS") or "default",
                    "pillow": PIL.__version__},
        "timing": "encode_s/decode_s: wall seconds in memory, models loaded and warm; "
                  "JPEG XL includes starting cjxl/djxl and PPM file I/O",
        "bd_rate_method": BD_METHOD, "skipped": skipped,
        "curves": cs, "published": [c["name"] for c in published], "bd_rates": bdr}
    files_out = {
        "per_image.csv": report.csv_bytes(rows, COLUMNS, {"bpp": ".6f", "psnr": ".4f",
                                                          "ms_ssim": ".6f", "encode_s": ".4f",
                                                          "decode_s": ".4f"}),
        "bdrate.csv": report.csv_bytes(bdr, ("curve", "kind", "anchor", "bd_rate_percent",
                                             "points", "anchor_points", "psnr_lo", "psnr_hi",
                                             "note"),
                                       {"bd_rate_percent": ".3f", "psnr_lo": ".3f",
                                        "psnr_hi": ".3f"}),
        "summary.json": report.json_bytes(summary),
    }
    try:
        files_out["rd.png"] = report.plot_png(
            cs, published, f"{len(files)} images from {os.path.basename(meta['dir'])}, "
                           f"{summary['date'][:10]}, {os.cpu_count()} CPUs (published: dashed)")
    except ImportError:
        warn("matplotlib is not installed: no rd.png (pip install matplotlib)")
    if paper:
        files_out["paper.md"] = report.paper_md(cs, meta, gradient_bias_md(cards, files, warn))
    report.write(out, files_out, force)
    return summary

