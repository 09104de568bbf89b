"""Evaluation reports: published anchors, BD-rate tables, the RD plot, paper.md, and
writing the output folder (every file via a temporary file + rename)."""
import csv
import io
import json
import math
import os
import tempfile

from . import metrics
from .errors import CodecError

FILES = ("per_image.csv", "summary.json", "rd.png", "bdrate.csv", "paper.md")
DEFAULT_ANCHORS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "..", "shared", "anchors", "kodak_published_rd.csv")
MINNEN = "Minnen 2018 mean-scale hyperprior, no context"
WEBP = "WebP m6 (Pillow)"
MEASURED_ANCHORS = (WEBP, "JPEG 4:2:0 (Pillow)", "AVIF s6 (Pillow)")


def check_out(out, force):
    """Refuse an --out folder that already holds results, unless ``force``."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CodecError(f"{out}: exists and is not a directory")
    old = [f for f in FILES if os.path.exists(os.path.join(out, f))]
    if old and not force:
        raise CodecError(f"{out} already holds results ({', '.join(old)}); use --force")


def read_published(path):
    """Published curves from the anchors CSV (codec, source, bpp, psnr_rgb_db); rows
    without a number are skipped."""
    curves = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                bpp, p = float(r.get("bpp") or ""), float(r.get("psnr_rgb_db") or "")
            except ValueError:
                continue
            if not (math.isfinite(bpp) and math.isfinite(p)):
                continue
            c = curves.setdefault(r["codec"], {"name": r["codec"], "kind": "published",
                                               "source": r.get("source", ""), "points": []})
            c["points"].append({"bpp": bpp, "psnr": p})
    for c in curves.values():
        c["points"].sort(key=lambda q: q["bpp"])
    return list(curves.values())


def _xy(curve):
    return [p["bpp"] for p in curve["points"]], [p["psnr"] for p in curve["points"]]


def bd(curve, anchor):
    """(BD-rate % or NaN, reason or '') of ``curve`` against ``anchor``."""
    (ra, pa), (rb, pb) = _xy(anchor), _xy(curve)
    need = metrics.BD_MIN_POINTS
    if len(set(pb)) < need:
        return math.nan, f"curve has fewer than {need} points"
    if len(set(pa)) < need:
        return math.nan, f"anchor has fewer than {need} points"
    if metrics.bd_overlap(pa, pb) is None:
        return math.nan, "no PSNR overlap"
    v = metrics.bd_rate(ra, pa, rb, pb)
    return v, "" if math.isfinite(v) else "not computable"


def anchors_of(curves, published):
    """The BD-rate anchors present: our measured WebP (then JPEG and AVIF, measured in
    the same run) and the published Minnen curve."""
    out = [c for name in MEASURED_ANCHORS for c in curves if c["name"] == name]
    out += [c for c in published if c["name"].startswith(MINNEN)][:1]
    return out


def bd_rows(curves, published):
    rows = []
    anchors = anchors_of(curves, published)
    for a in anchors:
        for c in curves + published:
            if c is a:
                continue
            v, why = bd(c, a)
            ov = metrics.bd_overlap(_xy(a)[1], _xy(c)[1])
            rows.append({"curve": c["name"], "kind": c["kind"], "anchor": a["name"],
                         "bd_rate_percent": v, "note": why, "points": len(c["points"]),
                         "anchor_points": len(a["points"]),
                         "psnr_lo": ov[0] if ov else math.nan,
                         "psnr_hi": ov[1] if ov else math.nan})
    return rows


def _fmt(v, spec):
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def csv_bytes(rows, columns, floats=None):
    floats = floats or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(k), floats[k]) if k in floats and isinstance(r.get(k), float)
                    else ("" if r.get(k) is None else r.get(k)) for k in columns])
    return buf.getvalue().encode()


PAPER_NAMES = {("un", "round"): "UN+Q", ("un", "uq"): "UN+UQ", ("sr", "uq"): "UN+UQ+SR",
               ("sr", "round"): "UN+SR+Q"}
PAPER_LABELS = ("UN+Q", "UN+UQ", "UN+UQ+SR", "UN+SR+Q")
# the summary over datasets: (name, curve, reference curve)
PAPER_EFFECTS = (("UQ penalty", "UN+UQ", "UN+Q"), ("SR gain", "UN+UQ+SR", "UN+UQ"),
                 ("UN+UQ+SR vs UN+Q", "UN+UQ+SR", "UN+Q"), ("UN+SR+Q vs UN+Q", "UN+SR+Q", "UN+Q"))


def _paper_curves(curves):
    """({(family, paper label): curve}, sorted families) of the model curves; a family
    is the architecture, its variable-rate sets apart ('hyperprior (variable rate)')."""
    def family(c):
        return c["arch"] + (" (variable rate)" if c.get("variable") else "")
    by = {(family(c), PAPER_NAMES.get((c["training"], c["quantizer"]))): c
          for c in curves if c["kind"] == "model" and not c.get("refine")}
    return by, sorted({family(c) for c in curves if c["kind"] == "model"})


def paper_effects(curves):
    """{family: {effect name: BD-rate % (NaN when not computable)}} of PAPER_EFFECTS."""
    by, families = _paper_curves(curves)
    out = {}
    for fam in families:
        row = {}
        for name, label, ref in PAPER_EFFECTS:
            c, r = by.get((fam, label)), by.get((fam, ref))
            row[name] = bd(c, r)[0] if c is not None and r is not None else math.nan
        out[fam] = row
    return out


def datasets_md(results, command):
    """The summary of ``uqcodec eval --paper`` over several folders: ``results`` is a list
    of (dataset name, summary.json dict). One row per family and dataset."""
    effects = {name: paper_effects(s["curves"]) for name, s in results}
    families = sorted({f for e in effects.values() for f in e})
    lines = ["# UQ penalty and soft-rounding gain by family and dataset", "",
             f"Measured by `{command}`; each dataset's own tables are in its folder "
             "(`paper.md`). BD-rates (" + metrics.BD_METHOD + ") in %; negative is better. "
             "UQ penalty: UN+UQ against UN+Q (what universal quantization costs a model "
             "trained with uniform noise); SR gain: UN+UQ+SR against UN+UQ (what soft "
             "rounding gives back).", "",
             "| family | dataset | images | wall (min) | "
             + " | ".join(n for n, _, _ in PAPER_EFFECTS) + " |",
             "|---|---|---|---|" + "---|" * len(PAPER_EFFECTS)]
    for fam in families:
        for name, s in results:
            row = effects[name].get(fam)
            if row is None or not any(math.isfinite(v) for v in row.values()):
                continue
            cells = [f"{v:+.1f}" if math.isfinite(v) else "n/a" for v in row.values()]
            lines.append(f"| {fam} | {name} | {len(s['images'])} | "
                         f"{s['wall_seconds'] / 60:.1f} | " + " | ".join(cells) + " |")
    return ("\n".join(lines) + "\n").encode()


def datasets_png(results, effects=("UQ penalty", "SR gain")):
    """Bars of ``effects`` (BD-rate %) per family and dataset: the summary's picture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = {name: paper_effects(s["curves"]) for name, s in results}
    order = ("linear", "factorized", "hyperprior")  # by flexibility, others after them
    families = sorted({f for e in table.values() for f, row in e.items()
                       if any(math.isfinite(row.get(k, math.nan)) for k in effects)},
                      key=lambda f: (next((i for i, a in enumerate(order)
                                           if f.startswith(a)), len(order)), f))
    names = [name for name, _ in results]
    fig, axes = plt.subplots(1, len(effects), figsize=(5.2 * len(effects), 3.6), dpi=110,
                             sharey=True, squeeze=False)
    width = 0.8 / max(1, len(names))
    colors = plt.get_cmap("tab10").colors
    for ax, effect in zip(axes[0], effects):
        for j, name in enumerate(names):
            vals = [table[name].get(f, {}).get(effect, math.nan) for f in families]
            xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(families))]
            ax.bar(xs, [0.0 if not math.isfinite(v) else v for v in vals], width,
                   color=colors[j % 10], label=name)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(range(len(families)))
        ax.set_xticklabels([f.replace(" (variable rate)", "\n(variable rate)")
                            for f in families], fontsize=8)
        ax.set_title(effect + ("  (UN+UQ vs UN+Q)" if effect == "UQ penalty" else
                               "  (UN+UQ+SR vs UN+UQ)" if effect == "SR gain" else ""),
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("BD-rate (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def paper_md(curves, meta, grad_bias=None):
    """The paper's experiment: per family UN+Q, UN+UQ, UN+UQ+SR and UN+SR+Q (the
    soft-rounding model decoded with plain rounding, no dither); BD-rates against UN+Q;
    matched points (same lambda); and, when given (markdown), the gradient-bias table."""
    lines = ["# UN+Q vs UN+UQ vs UN+UQ+SR (Agustsson & Theis 2020)", "",
             f"{meta['n_images']} images from `{meta['dir']}`; bpp from real files (header "
             f"included), PSNR on 8-bit RGB, means over images. BD-rate: "
             f"{metrics.BD_METHOD}. Negative is better. UN+SR+Q: the soft-rounding model "
             "decoded with plain rounding and no dither (what the paper did not show).", "",
             "| family | curve | points | bpp | PSNR (dB) | BD-rate vs UN+Q |",
             "|---|---|---|---|---|---|"]
    by, families = _paper_curves(curves)
    detail = []
    for fam in families:
        base = by.get((fam, "UN+Q"))
        for label in PAPER_LABELS:
            c = by.get((fam, label))
            if c is None:
                lines.append(f"| {fam} | {label} | 0 | - | - | no models |")
                continue
            b, p = _xy(c)
            if label == "UN+Q":
                cell = "(anchor)"
            elif base is None:
                cell = "n/a (no UN+Q curve)"
            else:
                v, why = bd(c, base)
                cell = f"{v:+.2f} %" if math.isfinite(v) else f"n/a ({why})"
            lines.append(f"| {fam} | {label} | {len(b)} | {min(b):.3f}-{max(b):.3f} | "
                         f"{min(p):.2f}-{max(p):.2f} | {cell} |")
            for q in c["points"]:
                detail.append(f"| {fam} | {label} | {q['setting']} | {q['lambda']:.5g} | "
                              f"{q['bpp']:.4f} | {q['psnr']:.3f} | {q['ms_ssim']:.4f} |")
    same = []
    # matched points: the same lambda in one family, fixed-rate or variable-rate models
    of = {}
    for (fam, label), c in sorted(by.items()):
        of.setdefault((c["arch"], label), []).append(c)
    for arch in sorted({a for a, _ in of}):
        for ref_label, label in (("UN+Q", "UN+UQ"), ("UN+Q", "UN+UQ+SR"),
                                 ("UN+UQ+SR", "UN+SR+Q")):
            pairs = [(q0, q) for c0 in of.get((arch, ref_label), []) for q0 in c0["points"]
                     for c in of.get((arch, label), []) for q in c["points"]
                     if q0["lambda"] and math.isclose(q["lambda"], q0["lambda"], rel_tol=1e-9)]
            same += [f"| {arch} | {q0['lambda']:.5g} | {label} vs {ref_label} | "
                     f"{q0['setting']} / {q['setting']} | "
                     f"{100 * (q['bpp'] / q0['bpp'] - 1):+.1f} % | {q['psnr'] - q0['psnr']:+.3f} |"
                     for q0, q in pairs]
    if same:
        lines += ["", "Matched points (same lambda; a single-point comparison, not a BD-rate):",
                  "", "| family | lambda | curves | models | bpp | PSNR (dB) |",
                  "|---|---|---|---|---|---|", *same]
    lines += ["", "Points (one per lambda):", "",
              "| family | curve | model | lambda | bpp | PSNR (dB) | MS-SSIM |",
              "|---|---|---|---|---|---|---|", *detail, ""]
    if grad_bias:
        lines += ["## Bias of the lower-variance gradient", "", grad_bias, ""]
    return "\n".join(lines).encode()


def plot_png(curves, published, title=""):
    """PSNR vs bpp: our models (thick, markers), classic codecs measured in the same run
    (thin, markers), published curves (dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(12, 6.5), dpi=110)
    colors = plt.get_cmap("tab20").colors
    measured = [p for c in curves for p in c["points"] if math.isfinite(p["psnr"])]
    xmax = max([p["bpp"] for p in measured] + [0.5]) * 1.08
    for i, c in enumerate(curves):
        b, p = _xy(c)
        model = c["kind"] == "model"
        ax.plot(b, p, "-o" if model else "-s", lw=2.2 if model else 1.2, ms=5 if model else 3,
                color=colors[(2 * i) % 20 + (i // 10) % 2], label=c["name"],
                zorder=3 if model else 2)
    for i, c in enumerate(published):
        b, p = _xy(c)
        ax.plot(b, p, "--", lw=1.0, color=plt.get_cmap("Dark2").colors[i % 8] if i < 8
                else colors[(2 * i + 1) % 20], label=f"{c['name']} [published]", zorder=1)
    ys = [p["psnr"] for p in measured] + [p["psnr"] for c in published for p in c["points"]
                                          if p["bpp"] <= xmax]
    if ys:
        ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
    ax.set_xlim(0, xmax)
    ax.set_xlabel("bits per pixel (real files)")
    ax.set_ylabel("PSNR RGB (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def clean(v):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def _atomic_write(path, data):
    """Temporary file in the same folder, permissions from the umask, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=".uqcodec-", suffix=".part",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(out, files, force):
    """Write {name: bytes} into ``out`` (created if needed), each atomically. With
    ``force``, result files of an earlier run that this run does not produce are removed."""
    os.makedirs(out, exist_ok=True)
    for name, data in files.items():
        _atomic_write(os.path.join(out, name), data)
    if force:
        for name in FILES:
            if name not in files and os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))


def json_bytes(obj):
    return (json.dumps(clean(obj), indent=2, allow_nan=False) + "\n").encode()
