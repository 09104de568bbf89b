"""Command-line interface: compress, decompress, info, models, train, eval."""
import json
import os
import signal
import sys

import click

from . import __version__
from .api import MAX_REFINE
from .errors import CodecError


def _fail(msg, code=1):
    from .errors import printable
    click.echo(f"uqcodec: error: {printable(msg)}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns every failure into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CodecError as e:
            _fail(str(e))
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (batch.Terminated)
            _fail(*(("terminated", 143) if type(e).__name__ == "Terminated"
                    else ("interrupted", 130)))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort,
                SystemExit):
            raise
        except MemoryError:
            _fail("out of memory")
        except OSError as e:
            _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        except Exception as e:  # noqa: BLE001 - a codec never shows a traceback
            if os.environ.get("UQCODEC_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e}", 2)


def _check_output(path, force, source=None):
    """Refuse an output that is a directory, the input ``source`` itself (also through
    a link), exists without --force, or lies in a missing folder."""
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory")
    if source is not None and _same_file(path, source):
        raise CodecError(f"{path}: the output would overwrite the input")
    if os.path.exists(path) and not force:
        raise CodecError(f"{path} exists (use --force to overwrite)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CodecError(f"{folder}: no such directory")


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.abspath(a) == os.path.abspath(b)


def _version_message():
    """``uqcodec X (coding tables: ...)``: whether the compiled table kernel is in use (the
    same files either way; without it the coding tables take 3-6x longer)."""
    from .exactmath import KERNEL
    if KERNEL is None:
        tables = "NumPy (no compiled kernel)"
    else:
        tables = "compiled, AVX2" if KERNEL.has_avx2() else "compiled"
    return f"uqcodec %(version)s (coding tables: {tables})"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, message=_version_message())
def main():
    """uqcodec: learned image compression with universal quantization.

    \b
      uqcodec compress photo.png            # writes photo.uq
      uqcodec decompress photo.uq -o out.png
      uqcodec info photo.uq
      uqcodec models
      uqcodec eval kodak/ --out results/kodak
    """


class _FamilyName(click.ParamType):
    """A model family of the registry (read when the command runs: a family registered
    at run time is a valid choice)."""
    name = "family"

    def get_metavar(self, param, ctx=None):
        from . import families
        return "[" + "|".join(families.names()) + "]"

    def convert(self, value, param, ctx):
        from . import families
        if value not in families.names():
            self.fail(f"{value!r} is not a model family (choose {', '.join(families.names())})",
                      param, ctx)
        return value


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("-o", "--output", type=click.Path(),
              help="Output file (default: IMAGE with .uq); only with a single IMAGE.")
@click.option("--model", "model", metavar="NAME|DIR",
              help="Shipped model name or model directory; variable-rate models that "
                   "cover one range together: NAME,NAME.")
@click.option("-q", "--quality", type=float,
              help="0 (smallest files) to 10 (best quality), default 5, any value between: "
                   "log-spaced in lambda over the range of the default variable-rate models "
                   "or of the variable-rate --model (uqcodec models shows the ranges). "
                   "Without variable-rate models: 1..N picks a fixed-rate model.")
@click.option("--target-bpp", type=float, metavar="BPP",
              help="Variable-rate model: search this image's rate for a file of BPP bits "
                   "per pixel (within 2 %; else the nearest reachable, said on stderr).")
@click.option("--target-psnr", type=float, metavar="DB",
              help="Variable-rate model: search this image's rate for a PSNR of DB "
                   "(within 0.1 dB; else the nearest reachable, said on stderr).")
@click.option("--seed", type=click.IntRange(0, (1 << 64) - 1),
              help="64-bit dither seed (default: fresh random).")
@click.option("--quantizer", type=click.Choice(["uq", "round"]), default="uq", show_default=True,
              help="uq: universal quantization (no train/test mismatch); round: plain rounding.")
@click.option("--tile", type=int, default=1024, show_default=True,
              help="Tile size in pixels (multiple of 64, 64..2048); tiles are coded "
                   "independently, so memory does not grow with the image.")
@click.option("--refine", type=click.IntRange(0, MAX_REFINE), default=0, show_default=True,
              metavar="STEPS",
              help="Encoder-side optimization of the latents for each image (hyperprior "
                   "and context models): smaller files at the same quality, same decoder. "
                   "A step takes about 0.7 s for a 768x512 image on one core; 50 is a good "
                   "value.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64),
              help="Worker processes for several files (default: 2, or 1 on one CPU).")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
def compress(images, output, model, quality, target_bpp, target_psnr, seed, quantizer, tile,
             refine, jobs, force):
    """Compress IMAGES (PNG, JPEG, anything Pillow reads; or directories of them) to .uq files.

    Several files are coded in parallel; a bad file is reported at the end and
    does not stop the others (exit code 1 if any failed)."""
    from . import api, batch
    batch.stop_on_sigterm()
    files, had_dir = batch.expand(images, batch.IMAGE_EXTS)
    opts = dict(model=model, seed=seed, quantizer=quantizer, quality=quality, tile=tile,
                refine=refine, target_bpp=target_bpp, target_psnr=target_psnr)
    if len(files) != 1 or had_dir:
        if output:
            raise CodecError("-o/--output is only valid with a single input file")
        _batch("compress", [(f, os.path.splitext(f)[0] + ".uq", opts) for f in files], jobs,
               force)
        return
    image = files[0]
    out = output or os.path.splitext(image)[0] + ".uq"
    _check_output(out, force, image)
    if refine:
        data, info = _refined(image, opts)
    else:
        data, info = api.compress_with_info(image, **opts)
    for n in info["warnings"]:
        click.echo(f"uqcodec: warning: {image}: {n}", err=True)
    _write(out, data)
    h = api.read_header(data)
    click.echo(f"{out}: {len(data)} bytes, {8 * len(data) / (h.width * h.height):.4f} bpp "
               f"({info['model']}, {quantizer})")


def _refined(image, opts):
    """Compress one image with refinement, with a progress bar over its steps. The bar
    opens at the first step, so a bad input or a linear model fails with its one-line
    error alone."""
    from PIL import Image
    from tqdm import tqdm

    from . import api, container
    try:  # the size only (lazy); a bad file is reported by compress_with_info
        with Image.open(image) as img:
            w, h = img.size
        total = opts["refine"] * container.tile_count(h, w, opts["tile"])
    except Exception:  # noqa: BLE001
        total = None
    bar = None

    def step(n):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="refining", unit="step", leave=False,
                       dynamic_ncols=True)
        bar.update()
    try:
        return api.compress_with_info(image, progress=step, **opts)
    finally:
        if bar is not None:
            bar.close()


def _batch(kind, jobs, n_jobs, force):
    """Run a batch; one line per failure at the end, exit code 1 if any failed."""
    from . import batch
    from .errors import printable
    if not jobs:
        raise CodecError("no input files")
    failures = batch.run(kind, jobs, n_jobs, check_output=lambda out: _check_output(out, force))
    done = len(jobs) - len(failures)
    click.echo(f"{kind}ed {done} of {len(jobs)} files" + (f", {len(failures)} failed"
                                                          if failures else ""))
    for src, msg in failures:
        click.echo(f"uqcodec: error: {printable(batch.message(src, msg))}", err=True)
    if failures:
        sys.exit(1)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("-o", "--output", type=click.Path(),
              help="Output PNG (default: FILE with .png); only with a single FILE.")
@click.option("--model", "model", metavar="NAME|DIR",
              help="Model directory, for files made with a model that is not shipped.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64),
              help="Worker processes for several files (default: 2, or 1 on one CPU).")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
def decompress(files, output, model, jobs, force):
    """Decompress .uq FILES (or directories of them) to PNG.

    Several files are decoded in parallel; a bad file is reported at the end and
    does not stop the others (exit code 1 if any failed)."""
    from . import api, batch, imageio
    batch.stop_on_sigterm()
    paths, had_dir = batch.expand(files, batch.UQ_EXTS)
    if len(paths) != 1 or had_dir:
        if output:
            raise CodecError("-o/--output is only valid with a single input file")
        _batch("decompress", [(f, os.path.splitext(f)[0] + ".png", dict(model=model))
                              for f in paths], jobs, force)
        return
    file = paths[0]
    out = output or os.path.splitext(file)[0] + ".png"
    _check_output(out, force, file)
    with _read(file) as data:  # read tile by tile, in bounded memory
        pixels = api.decompress(data, model=model)
    _write(out, imageio.png_bytes(pixels))
    click.echo(f"{out}: {pixels.shape[1]}x{pixels.shape[0]}")


def _read(path):
    """Open a .uq file for decoding (``container.open_file``: the header first, bounded
    reads, the payload CRC in chunks; streams are read when a tile needs them)."""
    from . import container
    if not os.path.exists(path):
        raise CodecError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory")
    try:
        return container.open_file(path)
    except OSError as e:
        raise CodecError(f"{path}: {e.strerror}") from None


@main.command()
@click.argument("file", type=click.Path(readable=False))
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def info(file, as_json):
    """Print the header of a .uq FILE."""
    from .errors import printable
    with _read(file) as f:
        header = f.header
    d = header.as_dict()
    d["file_bytes"] = f.size
    d["bpp"] = round(8 * f.size / (header.width * header.height), 6)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k in ("version", "model", "fingerprint", "quantizer", "width", "height", "tile", "mode",
              "seed", "rate", "stream_lengths", "file_bytes", "bpp"):
        if k != "rate" or header.version >= 3:  # the rate parameter: versions 3 and 4
            click.echo(f"{k:15s} {printable(d[k]) if k == 'model' else d[k]}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of model cards.")
@click.option("--families", "show_families", is_flag=True,
              help="List the model families (what --model of uqcodec train takes) and what "
                   "each can do, instead of the models.")
def models(as_json, show_families):
    """List the shipped models (the default is marked with *).

    quality: the range of --quality that each variable-rate model serves in the default
    rate set (a variable-rate model alone, --model NAME, takes 0..10 over its own lambda
    range); where no variable-rate models ship, the --quality that picks a fixed-rate
    model of the default ladder."""
    from . import families, zoo
    if show_families:
        caps = ("hyper_latent", "variable_rate", "refine", "widen", "legacy")
        rows = [{"name": f.name, "description": f.description,
                 **{c: getattr(f, c) for c in caps}} for f in families.all_families()]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for r in rows:
            can = ", ".join(c.replace("_", " ") for c in caps if r[c]) or "-"
            mark = "*" if r["name"] == families.DEFAULT else " "
            click.echo(f"{mark} {r['name']:12s} {r['description']} [{can}]")
        return
    cards = zoo.list_models()
    if as_json:
        click.echo(json.dumps([{k: v for k, v in c.items() if k != "path"} for c in cards],
                              indent=2))
        return
    lad = zoo.ladder()
    vset = sorted(zoo.default_variable(), key=lambda c: c["lambda_range"][0])
    var = {c["path"] for c in vset}
    default = None if var else (zoo.resolve() if lad else None)
    # --quality of a fixed-rate model: only while no variable-rate set is the default
    q = {} if var else {c["path"]: str(i + 1) for i, c in enumerate(lad)}
    if vset:  # the qualities each variable-rate model serves in its set
        from .rates import set_edges, set_quality
        e = set_edges([c["lambda_range"] for c in vset])
        q.update({c["path"]: f"{set_quality(e[i], e):.4g}-{set_quality(e[i + 1], e):.4g}"
                  for i, c in enumerate(vset)})
    click.echo(f"  {'name':28s} {'arch':10s} {'train':5s} {'lambda':>13s} {'steps':>7s} "
               f"{'Kodak bpp':>11s} {'PSNR':>11s} quality")

    def f(v, fmt):
        if isinstance(v, (int, float)):
            return format(v, fmt)
        width = fmt[:len(fmt) - len(fmt.lstrip("0123456789"))]  # "7d" -> "7", ".4f" -> ""
        return format("-", ">" + width)

    for c in cards:
        mark = "*" if c["path"] == default or c["path"] in var else " "
        pts = c.get("kodak_points") or []
        if c.get("lambda_range"):  # variable rate: its range, lowest to highest quality
            lam = "{:g}-{:g}".format(*c["lambda_range"])
            bpp = f"{pts[0]['bpp']:.3f}-{pts[-1]['bpp']:.2f}" if pts else "-"
            psnr = f"{pts[0]['psnr']:.2f}-{pts[-1]['psnr']:.2f}" if pts else "-"
            quality = q.get(c["path"], "0-10")
        else:
            lam, bpp, psnr = (f(c.get("lambda"), ".4f"), f(c.get("kodak_bpp"), ".3f"),
                              f(c.get("kodak_psnr"), ".2f"))
            quality = q.get(c["path"], "")
        click.echo(f"{mark} {c['name']:28s} {c.get('arch', '?'):10s} {c.get('training', '?'):5s} "
                   f"{lam:>13s} {f(c.get('steps'), '7d')} {bpp:>11s} {psnr:>11s} {quality}")


@main.command()
@click.option("--model", "arch", type=_FamilyName(), default="hyperprior", show_default=True,
              help="Model family (uqcodec models --families lists them).")
@click.option("--mode", type=click.Choice(["un", "sr"]), default="sr", show_default=True,
              help="un: additive uniform noise; sr: soft rounding + noise (UN+UQ+SR).")
@click.option("--lambda", "lmbda", required=True, metavar="LAMBDA|LO:HI",
              help="Rate-distortion trade-off: loss = bpp + lambda * MSE (0..255 scale). A "
                   "range LO:HI (hyperprior) trains one variable-rate model: each step draws "
                   "lambda log-uniformly from the range.")
@click.option("--out", required=True, type=click.Path(), help="Output model directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Folder of training images (default ../shared/data/train).")
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--patch", type=int, default=128, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak learning rate.")
@click.option("--warmup", type=int, default=1000, show_default=True, help="Warm-up steps.")
@click.option("--fresh-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning-rate multiplier of the parts a warm start cannot load (a "
                   "context model's networks beside converged transforms). Default 1; "
                   "--resume keeps the run's.")
@click.option("--train-only", default=None, metavar="PARTS",
              help="Comma-separated parts that learn (e.g. 'context': a context model's "
                   "networks on frozen transforms); the rest stays as loaded. --resume "
                   "keeps the run's.")
@click.option("--decay-start", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Run fraction where the cosine decay of the learning rate starts.")
@click.option("--alpha", default="1:8", show_default=True,
              help="Soft-rounding alpha START:END, ramped linearly over the run (sr mode).")
@click.option("--alpha-r", default=None, metavar="START:END",
              help="Separate alpha for the decoder's r_alpha (default: same as --alpha).")
@click.option("--low-variance/--no-low-variance", default=True, show_default=True,
              help="sr: gradients with the expectation over the noise (Agustsson & Theis).")
@click.option("--minutes", type=float, default=None,
              help="Wall-time budget: schedules follow elapsed time; stops at the budget.")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False),
              help="Warm start from a model directory. With a larger --N/--M, a hyperprior "
                   "is widened first (same reconstructions; the new channels start at zero). "
                   "A variable-rate model may move to another --lambda LO:HI: its learned "
                   "gains are kept inside its old range and extended as sqrt(lambda).")
@click.option("--resume", is_flag=True, help="Resume from the checkpoint in --out.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bf16/--no-bf16", default=True, show_default=True,
              help="bfloat16 convolutions (GDN and entropy math stay float32).")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Checkpoints and logs (default: runs/<name of --out>).")
@click.option("--N", "n", type=int,
              help="Hyperprior: transform channels (new models: 64; Minnen et al.: 128).")
@click.option("--M", "m", type=int, help="Latent channels (new hyperprior models: 128).")
@click.option("--latent-gain", type=float, default=None,
              help="Hyperprior: fixed gain on the latents, so y starts near unit scale "
                   "(new models: 16; 1 = none). A warm start keeps its model's size and gain.")
@click.option("--bypass", type=int, default=None, metavar="K",
              help="Hyperprior: a linear KxK stride-K path beside the analysis and the "
                   "synthesis (16 matches the 16x downsampling). With --init-from a model "
                   "without one, it is fitted to what the old latents miss and feeds the new "
                   "latent channels (--M).")
@click.option("--context", "context_parts", type=click.Choice(["both", "checkerboard", "groups"]),
              default=None,
              help="Context family, a new model: its spatial and channel context (default "
                   "both: uneven channel groups, each in two checkerboard halves), the "
                   "checkerboard alone (one group) or the channel groups alone.")
@click.option("--strategy", type=click.Choice(["auto", "one", "mirrored", "multiworker"]),
              default="auto", show_default=True,
              help="tf.distribute: one device, mirrored (the GPUs of this host), multiworker "
                   "(the hosts of TF_CONFIG); auto: multiworker when TF_CONFIG names a "
                   "cluster, mirrored with several GPUs, else one. --batch is the global batch.")
@click.option("--data-split", type=click.Choice(["seed", "slice"]), default="seed",
              show_default=True,
              help="seed: each worker draws its own crops (seeded by its index); slice: each "
                   "takes its share of the global batch and noise of a single-process run "
                   "(for reproducing one; every worker crops the whole batch).")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="Measure the exported model on Kodak (when ../shared is present).")
def train(arch, mode, lmbda, out, data, steps, patch, batch, lr, warmup, fresh_lr, train_only,
          decay_start,
          alpha, alpha_r, low_variance, minutes, init_from, resume, seed, bf16, run_dir, n, m,
          latent_gain, bypass, context_parts, strategy, data_split, measure):
    """Train a model and export it (with Kodak numbers when ../shared is present).

    Loss: bits per pixel + lambda * MSE on the 0..255 scale. Learning rate: linear
    warm-up, constant, cosine decay to 1/100 from --decay-start to the end of the run.
    Several hosts: start the same command on each with its TF_CONFIG; only the chief
    writes (checkpoints, summaries, export), so --run-dir should be shared for --resume.
    """
    from . import families
    from .training import _tf
    _tf.require("training", _tf.TRAIN_MODULES)  # one line naming the extra
    from .training import train as T  # (TensorFlow is imported only when training starts)
    if data is None and not os.path.isdir(T.DEFAULT_DATA):
        raise CodecError("no default training set here (../shared/data/train): give --data "
                         "DIR, a folder of photographs")

    def pair(text, name):
        try:
            a, b = (float(v) for v in text.split(":"))
            return a, b
        except ValueError:
            raise CodecError(f"{name} must be START:END, e.g. 1:8") from None
    try:
        lmbda = tuple(float(v) for v in lmbda.split(":")) if ":" in lmbda else float(lmbda)
        if isinstance(lmbda, tuple) and len(lmbda) != 2:
            raise ValueError
    except ValueError:
        raise CodecError("--lambda must be a number or a range LO:HI, e.g. 0.001:0.1") from None
    if isinstance(lmbda, tuple) and (not families.get(arch).variable_rate
                                     or not 0 < lmbda[0] < lmbda[1]):
        raise CodecError("a --lambda range LO:HI needs 0 < LO < HI and a family with variable "
                         "rate (" + ", ".join(f.name for f in families.all_families()
                                             if f.variable_rate) + ")")
    a0, a1 = pair(alpha, "--alpha")
    ar = pair(alpha_r, "--alpha-r") if alpha_r else None
    args = {k: v for k, v in (("N", n), ("M", m), ("latent_gain", latent_gain),
                              ("bypass", bypass), ("context", context_parts)) if v}
    from .training.model import model_class
    if context_parts and "context" not in getattr(model_class(arch), "options", ()):
        raise CodecError(f"--context is a setting of a family with a context model, not of "
                         f"{arch}")
    run = run_dir or os.path.join("runs", os.path.basename(os.path.normpath(out)))
    T.train(arch, mode, lmbda, run, data=data, steps=steps, patch=patch, batch=batch, lr=lr,
            warmup=warmup, decay_start=decay_start, alpha=(a0, a1), alpha_r=ar,
            low_variance=low_variance, minutes=minutes, init_from=init_from, resume=resume,
            seed=seed, bf16=bf16, model_args=args, export=False, strategy=strategy,
            data_split=data_split, fresh_lr=fresh_lr,
            train_only=[p for p in train_only.split(",") if p] if train_only else None)
    worker, workers, chief = T.worker_role(strategy)
    if not chief:
        click.echo(f"worker {worker} of {workers} done (the chief exports)")
        return
    from .training.export import export_model
    card = export_model(run, out, measure=measure)
    click.echo(f"exported {out}: kodak bpp {card.get('kodak_bpp')} PSNR {card.get('kodak_psnr')}")


@main.command("eval")
@click.argument("folders", metavar="DIR...", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="Output folder (created): per_image.csv, summary.json, rd.png, bdrate.csv "
                   "and, with --paper, paper.md. With several DIRs: one sub-folder per DIR "
                   "(named as the DIR) and, with --paper, summary.md and summary.png (UQ "
                   "penalty and SR gain by family and dataset); a DIR whose results are there "
                   "from a run "
                   "with the same models and settings is kept, so an interrupted run "
                   "resumes.")
@click.option("--models", default="all", show_default=True,
              metavar="all|default|none|NAME,...",
              help="Models to measure (names or model directories), all shipped ones, the "
                   "default codec's (one curve), or none.")
@click.option("--baselines", default="jpeg,webp,avif,jxl", show_default=True,
              metavar="jpeg,webp,avif,jxl|none",
              help="Classic codecs measured in the same run at a quality sweep; one that "
                   "cannot run here is skipped with a warning.")
@click.option("--paper", is_flag=True,
              help="Also decode every model with rounding (UN+Q, UN+SR+Q), measure the "
                   "variable-rate sets of a family on one lambda grid that also holds the "
                   "lambdas of its fixed-rate models (matched points) and write paper.md: "
                   "BD-rates against UN+Q per family, matched points and the gradient-bias "
                   "table.")
@click.option("--refine", type=click.IntRange(0, MAX_REFINE), default=0, show_default=True,
              metavar="STEPS",
              help="Also code the 'sr' models of the families that refine (hyperprior, "
                   "context) with STEPS steps of encoder-side refinement (their own curves, "
                   "'..., refined STEPS').")
@click.option("--seed", type=click.IntRange(0, (1 << 63) - 1), default=1, show_default=True,
              help="Dither seed of the first image (image i uses SEED+i).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N images of DIR.")
@click.option("--anchors", type=click.Path(), metavar="CSV|none",
              help="Published curves (codec,source,bpp,psnr_rgb_db); default "
                   "../shared/anchors/kodak_published_rd.csv for the Kodak images (kodim*), "
                   "none for other images; skipped if absent.")
@click.option("-f", "--force", is_flag=True,
              help="Overwrite the result files of an earlier run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(folders, out, models, baselines, paper, refine, seed, limit, anchors, force, quiet):
    """Rate-distortion evaluation of models and classic codecs on the images in DIR (or
    in each of several DIRs).

    Every image is compressed to real bytes and decoded; bpp (file size incl. header),
    PSNR and MS-SSIM on 8-bit RGB and encode/decode times are recorded. Results are
    written only when the whole run succeeds; an --out that already holds results is
    refused without --force.
    """
    from . import evaluate
    kw = dict(models=models, baselines=baselines, paper=paper, force=force, seed=seed,
              limit=limit, anchors=anchors, refine=refine, progress=not quiet,
              warn=lambda m: click.echo(f"uqcodec: warning: {m}", err=True))
    if len(folders) == 1:
        s = evaluate.run(folders[0], out, **kw)
        click.echo(f"{out}: {len(s['images'])} images, {len(s['curves'])} curves, "
                   f"{s['wall_seconds']:.0f} s")
        return
    options = [f"--models {models}"] if models != "all" else []
    options += [f"--baselines {baselines}"] if baselines != "jpeg,webp,avif,jxl" else []
    options += ["--paper"] * paper + [f"--refine {refine}"] * bool(refine)
    options += [f"--seed {seed}"] * (seed != 1) + [f"--limit {limit}"] * bool(limit)
    command = " ".join(["uqcodec eval", *options, "--out", evaluate.shown_dir(out),
                        *(evaluate.shown_dir(f) for f in folders)])
    for name, s in evaluate.run_many(folders, out, command=command, **kw):
        click.echo(f"{out}/{name}: {len(s['images'])} images, {len(s['curves'])} curves, "
                   f"{s['wall_seconds']:.0f} s")
    if paper:
        click.echo(f"{out}/summary.md, summary.png: the paper's comparison by family and dataset")


_interrupted = []


def _on_sigint(signum, frame):
    """Ctrl-C: remember it (a library may swallow the KeyboardInterrupt) and raise it."""
    _interrupted.append(signum)
    raise KeyboardInterrupt


def _write(out, data):
    """Write an output file atomically, unless Ctrl-C was pressed meanwhile."""
    from . import imageio
    if _interrupted:
        raise KeyboardInterrupt
    imageio.atomic_write(out, data)


def run():
    """Console entry point. Exits with os._exit so TensorFlow's teardown cannot print noise."""
    code = 0
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        main(standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt as e:
        term = type(e).__name__ == "Terminated"  # SIGTERM (batch.Terminated)
        click.echo(f"uqcodec: error: {'terminated' if term else 'interrupted'}", err=True)
        code = 143 if term else 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
