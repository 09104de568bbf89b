#!/usr/bin/env python
"""Refresh the shipped model cards' Kodak numbers from an eval run.

    python scripts/cards_from_eval.py results/kodak/summary.json [NAME_PREFIX ...]

(only the models whose names start with one of the prefixes, when given; the points of
variable-rate sets are not one model's and are skipped)

Sets ``kodak_bpp`` / ``kodak_psnr`` / ``kodak_images`` (universal quantization)
and, for ``un`` models measured with ``--paper``, ``kodak_round_bpp`` /
``kodak_round_psnr`` (UN+Q) and, for curves measured with ``--refine N``,
``kodak_refined_bpp`` / ``kodak_refined_psnr`` / ``kodak_refine_steps`` in each
measured model's model.json, so that the cards, results/kodak and the README agree.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    from uqcodec import zoo
    with open(sys.argv[1]) as f:
        summary = json.load(f)
    prefixes = tuple(sys.argv[2:])
    for curve in summary["curves"]:
        if curve.get("kind") != "model" or curve.get("variable"):
            continue
        suffix = {"uq": "", "round": "_round"}[curve["quantizer"]]
        refine = curve.get("refine") or 0
        if refine:
            suffix += "_refined"
        for p in curve["points"]:
            if prefixes and not p["setting"].startswith(prefixes):
                continue
            path = os.path.join(zoo.resolve(p["setting"]), "model.json")
            with open(path) as f:
                card = json.load(f)
            card[f"kodak{suffix}_bpp"] = round(p["bpp"], 4)
            card[f"kodak{suffix}_psnr"] = round(p["psnr"], 3)
            card["kodak_images"] = p["images"]
            if refine:
                card["kodak_refine_steps"] = refine
            with open(path + ".tmp", "w") as f:
                json.dump(card, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(path + ".tmp", path)
            print(f"{p['setting']}{suffix}: {p['bpp']:.4f} bpp {p['psnr']:.3f} dB")


if __name__ == "__main__":
    main()
