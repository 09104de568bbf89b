#!/usr/bin/env python
"""Print the shipped models' cards as a markdown table (for the README).

Steps and wall time are totals over the warm-start chain (this run + the model it
started from); steps/s = steps / wall time (on a CPU shared with other jobs). A
variable-rate model shows its lambda range and its Kodak numbers at quality 0 / 5 / 10.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    from uqcodec import zoo

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    print("| model | size | training | lambda | steps (this run) | wall (min) | steps/s | warm start "
          "| Kodak bpp | Kodak PSNR (dB) | UN+Q bpp / PSNR | refined bpp / PSNR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in zoo.list_models():
        wall = c.get("wall_seconds")
        rate = c["steps"] / wall if wall else None
        rq = (f"{c['kodak_round_bpp']:.4f} / {c['kodak_round_psnr']:.2f}"
              if c.get("kodak_round_bpp") else "")
        rr = (f"{c['kodak_refined_bpp']:.4f} / {c['kodak_refined_psnr']:.2f}"
              if c.get("kodak_refined_bpp") else "")
        size = (f"N{c.get('N')}/M{c.get('M')}" + (" + bypass" if c.get("bypass") else "")
                + (f", groups {'/'.join(map(str, c['groups']))}" if c.get("groups") else "")
                if c.get("N") else
                f"M{c.get('M')}, {c.get('kernel')}x{c.get('kernel')}/{c.get('stride')}")
        pts = c.get("kodak_points")  # a variable-rate model: quality 0 / 5 / 10
        if c.get("lambda_range"):
            lam = "{:g}-{:g}".format(*c["lambda_range"])
            bpp = " / ".join(f"{p['bpp']:.3f}" for p in pts) if pts else "-"
            psnr = " / ".join(f"{p['psnr']:.2f}" for p in pts) if pts else "-"
        else:
            lam, bpp, psnr = c["lambda"], f(c.get("kodak_bpp"), ".4f"), f(c.get("kodak_psnr"), ".2f")
        print(f"| {c['name']} | {size} | {c['training']} | {lam} | {c['steps']} "
              f"({c.get('run_steps') or c['steps']}) | {f(wall and wall / 60, '.0f')} | "
              f"{f(rate, '.2f')} | {os.path.basename(c.get('init_from') or '') or '-'} | "
              f"{bpp} | {psnr} | {rq} | {rr} |")

if __name__ == "__main__":
    main()
