"""Export a training run to a shipped model directory and measure it on Kodak."""
import json
import os
import shutil

from .. import zoo

CARD_FIELDS = ("name", "arch", "training", "lambda", "steps", "kodak_bpp", "kodak_psnr")


def export_model(run_dir, out_dir, name=None, kodak=None, measure=True):
    """run_dir (train.json + weights.npz) -> out_dir (model.json, weights.npz, tables.npz)."""
    from .model import CompressionModel, save_model_dir, size_keys
    with open(os.path.join(run_dir, "train.json")) as f:
        state = json.load(f)
    config = dict(state.get("config") or {})  # the model's whole config (every key)
    # runs written before train.json held it: the keys a model was rebuilt from
    for k in ("arch", "training", "lambda", "alpha", "alpha_r") + size_keys(state["arch"]):
        if k in state:
            config.setdefault(k, state[k])
    for k in ("alpha", "alpha_r"):  # the schedule's value at the end of the run
        if k in state:
            config[k] = state[k]
    model = CompressionModel(config)
    model.load_weights_npz(os.path.join(run_dir, "weights.npz"))
    name = name or os.path.basename(os.path.normpath(out_dir))
    init_steps = state.get("init_steps") or 0
    card = {"name": name, "steps": state.get("steps", 0) + init_steps, "run_steps": state.get("steps"),
            "wall_seconds": round(state.get("wall_seconds", 0.0) + (state.get("init_wall_seconds") or 0), 1),
            "patch": state.get("patch"), "batch": state.get("batch"),
            "lr": state.get("lr"), "warmup": state.get("warmup"),
            "decay_start": state.get("decay_start"), "bf16": state.get("bf16"),
            "data": os.path.basename(state.get("data", "") or ""),
            "init_from": os.path.basename(os.path.normpath(state["init_from"]))
            if state.get("init_from") else None,
            "alpha_schedule": state.get("alpha_schedule"),
            "low_variance_grad": state.get("low_variance_grad"),
            "kodak_bpp": None, "kodak_psnr": None}
    tmp = out_dir.rstrip("/") + ".exporting"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(model, tmp, card)
    if measure:
        from ..evaluate import measure_model
        kodak = kodak or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                                      "kodak")
        if os.path.isdir(kodak):
            with open(os.path.join(tmp, "model.json")) as f:
                card = json.load(f)
            if card.get("lambda_range"):  # variable rate: lowest, default, highest quality
                from ..rates import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN
                pts = []
                for q in (QUALITY_MIN, DEFAULT_QUALITY, QUALITY_MAX):
                    r = measure_model(tmp, kodak, quality=q)
                    pts.append({"quality": q, "bpp": round(r["bpp"], 4),
                                "psnr": round(r["psnr"], 3)})
                card["kodak_points"] = pts
                res = {"bpp": pts[1]["bpp"], "psnr": pts[1]["psnr"], "images": r["images"]}
            else:
                res = measure_model(tmp, kodak)
            card.update({"kodak_bpp": round(res["bpp"], 4), "kodak_psnr": round(res["psnr"], 3),
                         "kodak_images": res["images"]})
            with open(os.path.join(tmp, "model.json"), "w") as f:
                json.dump(card, f, indent=2, sort_keys=True)
                f.write("\n")
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return zoo.read_card(out_dir)
