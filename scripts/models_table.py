#!/usr/bin/env python
"""Print the shipped models' cards as a markdown table (for the README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    from uqcodec import zoo
    print("| model | family | training | lambda | steps | train wall (min) | Kodak bpp | Kodak PSNR (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in zoo.list_models():
        wall = f"{c['wall_seconds'] / 60:.0f}" if c.get("wall_seconds") else "-"
        print(f"| {c['name']} | {c['arch']} | {c['training']} | {c['lambda']} | {c['steps']} | "
              f"{wall} | {c['kodak_bpp']} | {c['kodak_psnr']} |")


if __name__ == "__main__":
    main()
