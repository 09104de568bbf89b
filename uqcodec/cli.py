"""Command-line interface: compress, decompress, info, models, train."""
import json
import os
import sys

import click

from .errors import CodecError


def _fail(msg, code=1):
    click.echo(f"uqcodec: error: {msg}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns every failure into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CodecError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
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


def _check_output(path, force):
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory")
    if os.path.exists(path) and not force:
        raise CodecError(f"{path} exists (use --force to overwrite)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CodecError(f"{folder}: no such directory")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uqcodec", message="uqcodec %(version)s")
def main():
    """uqcodec: learned image compression with universal quantization.

    \b
      uqcodec compress photo.png            # writes photo.uq
      uqcodec decompress photo.uq -o out.png
      uqcodec info photo.uq
      uqcodec models
    """


@main.command()
@click.argument("image", type=click.Path(dir_okay=True))
@click.option("-o", "--output", type=click.Path(), help="Output file (default: IMAGE with .uq).")
@click.option("--model", "model", metavar="NAME|DIR", help="Shipped model name or model directory.")
@click.option("-q", "--quality", type=int, help="1..N: default-family model from low to high rate.")
@click.option("--seed", type=click.IntRange(0, (1 << 64) - 1),
              help="64-bit dither seed (default: fresh random).")
@click.option("--quantizer", type=click.Choice(["uq", "round"]), default="uq", show_default=True,
              help="uq: universal quantization (no train/test mismatch); round: plain rounding.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
def compress(image, output, model, quality, seed, quantizer, force):
    """Compress IMAGE (PNG, JPEG, anything Pillow reads) to a .uq file."""
    from . import api, imageio
    out = output or os.path.splitext(image)[0] + ".uq"
    _check_output(out, force)
    data, info = api.compress_with_info(image, model=model, seed=seed, quantizer=quantizer,
                                        quality=quality)
    for n in info["warnings"]:
        click.echo(f"uqcodec: warning: {image}: {n}", err=True)
    imageio.atomic_write(out, data)
    h = api.read_header(data)
    click.echo(f"{out}: {len(data)} bytes, {8 * len(data) / (h.width * h.height):.4f} bpp "
               f"({info['model']}, {quantizer})")


@main.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="Output PNG (default: FILE with .png).")
@click.option("--model", "model", metavar="NAME|DIR",
              help="Model directory, for files made with a model that is not shipped.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
def decompress(file, output, model, force):
    """Decompress a .uq FILE to PNG."""
    from . import api, imageio
    out = output or os.path.splitext(file)[0] + ".png"
    _check_output(out, force)
    data = _read(file)
    pixels = api.decompress(data, model=model)
    imageio.atomic_write(out, imageio.png_bytes(pixels))
    click.echo(f"{out}: {pixels.shape[1]}x{pixels.shape[0]}")


def _read(path):
    if not os.path.exists(path):
        raise CodecError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CodecError(f"{path}: {e.strerror}") from None


@main.command()
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def info(file, as_json):
    """Print the header of a .uq FILE."""
    from . import container
    data = _read(file)
    header, streams = container.unpack(data)
    d = header.as_dict()
    d["file_bytes"] = len(data)
    d["bpp"] = round(8 * len(data) / (header.width * header.height), 6)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k in ("version", "model", "fingerprint", "quantizer", "width", "height", "mode", "seed",
              "stream_lengths", "file_bytes", "bpp"):
        click.echo(f"{k:15s} {d[k]}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of model cards.")
def models(as_json):
    """List the shipped models (the default is marked with *)."""
    from . import zoo
    cards = zoo.list_models()
    if as_json:
        click.echo(json.dumps([{k: v for k, v in c.items() if k != "path"} for c in cards],
                              indent=2))
        return
    lad = zoo.ladder()
    default = zoo.resolve() if lad else None
    q = {c["path"]: i + 1 for i, c in enumerate(lad)}
    click.echo(f"  {'name':28s} {'arch':10s} {'train':5s} {'lambda':>7s} {'steps':>7s} "
               f"{'bpp':>7s} {'PSNR':>7s} quality")
    for c in cards:
        mark = "*" if c["path"] == default else " "

        def f(v, fmt):
            return format(v, fmt) if isinstance(v, (int, float)) else format("-", ">" + fmt[0])
        click.echo(f"{mark} {c['name']:28s} {c.get('arch', '?'):10s} {c.get('training', '?'):5s} "
                   f"{f(c.get('lambda'), '7.4f')} {f(c.get('steps'), '7d')} "
                   f"{f(c.get('kodak_bpp'), '7.3f')} {f(c.get('kodak_psnr'), '7.2f')} "
                   f"{q.get(c['path'], '')}")


@main.command()
@click.option("--model", "arch", type=click.Choice(["linear", "hyperprior"]), default="hyperprior",
              show_default=True, help="Model family.")
@click.option("--mode", type=click.Choice(["un", "sr"]), default="sr", show_default=True,
              help="un: additive uniform noise; sr: soft rounding + noise (UN+UQ+SR).")
@click.option("--lambda", "lmbda", type=float, required=True,
              help="Rate-distortion trade-off: loss = bpp + lambda * MSE (0..255 scale).")
@click.option("--out", required=True, type=click.Path(), help="Output model directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Folder of training images (default ../shared/data/train).")
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--patch", type=int, default=128, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak learning rate.")
@click.option("--warmup", type=int, default=1000, show_default=True, help="Warm-up steps.")
@click.option("--alpha", default="1:8", show_default=True,
              help="Soft-rounding alpha START:END, ramped linearly (sr mode).")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False),
              help="Warm start from a model directory.")
@click.option("--resume", is_flag=True, help="Resume from the checkpoint in --out.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bf16/--no-bf16", default=True, show_default=True,
              help="bfloat16 convolutions (GDN and entropy math stay float32).")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Checkpoints and logs (default: runs/<name of --out>).")
@click.option("--N", "n", type=int, help="Hyperprior: transform channels.")
@click.option("--M", "m", type=int, help="Latent channels.")
def train(arch, mode, lmbda, out, data, steps, patch, batch, lr, warmup, alpha, init_from, resume,
          seed, bf16, run_dir, n, m):
    """Train a model and export it (with Kodak numbers when ../shared is present)."""
    from . import train as T
    try:
        a0, a1 = (float(v) for v in alpha.split(":"))
    except ValueError:
        raise CodecError("--alpha must be START:END, e.g. 1:8") from None
    args = {k: v for k, v in (("N", n), ("M", m)) if v}
    run = run_dir or os.path.join("runs", os.path.basename(os.path.normpath(out)))
    T.train(arch, mode, lmbda, run, data=data, steps=steps, patch=patch, batch=batch, lr=lr,
            warmup=warmup, alpha=(a0, a1), init_from=init_from, resume=resume, seed=seed,
            bf16=bf16, model_args=args, export=False)
    from .export import export_model
    card = export_model(run, out)
    click.echo(f"exported {out}: kodak bpp {card.get('kodak_bpp')} PSNR {card.get('kodak_psnr')}")


def run():
    """Console entry point. Exits with os._exit so TensorFlow's teardown cannot print noise."""
    code = 0
    try:
        main(standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        click.echo("uqcodec: error: interrupted", err=True)
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
