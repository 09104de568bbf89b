#!/usr/bin/env python
"""Export a training run directory to a model directory and measure it on Kodak.

    python scripts/export.py RUN_DIR models/NAME [--no-measure]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--no-measure", action="store_true")
    args = ap.parse_args()
    from uqcodec.training.export import export_model
    card = export_model(args.run_dir, args.out, measure=not args.no_measure)
    print(f"{card['name']}: steps {card['steps']} wall {card['wall_seconds']} s, "
          f"Kodak {card['kodak_bpp']} bpp {card['kodak_psnr']} dB")


if __name__ == "__main__":
    main()
