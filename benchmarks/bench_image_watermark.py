"""The image watermark (keyed STDM in the low-frequency DCT of the luminance; ``genloop.safety.image_watermark``):
bit accuracy and detection rate after common edits, its false-positive rate on unmarked images, and its PSNR.

Images: "generated-like" real images that ship offline — scikit-learn's digits (8x8, 17 grey levels) upscaled
bicubically to the size (grey, "L", like GenLoop's digit models) and random square patches of
``sklearn.datasets.load_sample_images()`` (two 427x640 photos) resized to the size (RGB), half and half.
Sizes 8, 16, 32 and 64 px; each carries what :func:`~genloop.safety.image_watermark.profile` gives it.

Per size, ``--n`` marked images (each a different generation id), each attacked by: nothing; JPEG q90/75/50
(PIL); resize x0.5 and back (bicubic); crop 10 % (the central 90 %, at least 1 px off every side) and resize back
(read through the decoder's crop re-synchronisation, as every attack whose direct read fails);
Gaussian noise sigma 2/255 and 5/255; brightness x1.1 and x0.9 (PIL ImageEnhance). Reported: bit accuracy of
the blind decode (the payload bits), the detection TPR of ``detect(image, expected_id)`` at the size's
threshold, the blind-detection rate (confident *and* the right hash) and the PSNR of the mark (over all
channels). The FPR: ``--n-null`` unmarked images per size (fresh patches/digits, not the marked ones) through
``detect`` against a random id and through the blind decoder, directly and with the crop re-synchronisation's
search (its thresholds were calibrated on another 10,000 unmarked images per size, so this FPR is out of sample).

The quality cost in FID (``--fid-sizes``, default 8 and 32): 1,000 real digits training images (a seeded pick,
8-bit quantised) scored by GenLoop's evaluation suite against the held-out reference on the reference net,
unmarked and marked (:func:`~genloop.safety.image_watermark.mark_tensors`), beside the suite's real-data floor
(another 1,000 training images): how far the mark moves real images, in the units ``genloop eval`` reports.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_image_watermark.py   # the table (see the JSON for its time)
    python benchmarks/bench_image_watermark.py --n 40 --n-null 500   # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_flags, cpu_name  # noqa: E402

from genloop.safety import image_watermark as wm  # noqa: E402

KEY = bytes(range(32))


class Source:
    def __init__(self, seed: int) -> None:
        from sklearn.datasets import load_digits, load_sample_images

        self.photos = [Image.fromarray(a) for a in load_sample_images().images]
        self.digits = load_digits().images
        self.rng = np.random.default_rng(seed)

    def image(self, size: int, i: int) -> Image.Image:
        rng = self.rng
        if i % 2 == 0:
            d = (self.digits[rng.integers(len(self.digits))] / 16 * 255).round().astype(np.uint8)
            return Image.fromarray(d).resize((size, size), Image.Resampling.BICUBIC)
        p = self.photos[int(rng.integers(len(self.photos)))]
        s = int(rng.integers(max(size, 24), min(p.size) // 2))
        x, y = int(rng.integers(0, p.width - s)), int(rng.integers(0, p.height - s))
        return p.crop((x, y, x + s, y + s)).resize((size, size), Image.Resampling.LANCZOS)


def jpeg(im: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    buf.seek(0)
    return Image.open(buf).convert(im.mode)


def noise(im: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, dtype=np.float64)
    return Image.fromarray(np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).round().astype(np.uint8))


def crop_back(im: Image.Image, frac: float = 0.10) -> Image.Image:
    w, h = im.size
    dx, dy = max(1, round(w * frac / 2)), max(1, round(h * frac / 2))  # at 8 px: 1 px a side (25 %)
    return im.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.Resampling.BICUBIC)


def attacks(rng: np.random.Generator) -> dict:
    bic = Image.Resampling.BICUBIC
    return {
        "clean": lambda im: im,
        "jpeg_q90": lambda im: jpeg(im, 90),
        "jpeg_q75": lambda im: jpeg(im, 75),
        "jpeg_q50": lambda im: jpeg(im, 50),
        "resize_half_and_back": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), bic).resize(
            im.size, bic
        ),
        "crop_10pct_resize_back": crop_back,
        "noise_2_255": lambda im: noise(im, 2.0, rng),
        "noise_5_255": lambda im: noise(im, 5.0, rng),
        "brightness_+10pct": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
        "brightness_-10pct": lambda im: ImageEnhance.Brightness(im).enhance(0.9),
    }


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def run_size(size: int, n: int, n_null: int, seed: int) -> dict:
    src = Source(seed + size)
    rng = np.random.default_rng(seed + 1000 + size)
    table = attacks(rng)
    prof = wm.profile(size, size)
    acc = {a: [] for a in table}
    tpr = {a: [] for a in table}
    blind = {a: [] for a in table}
    acc_by = {a: {"digits": [], "photos": []} for a in table}
    psnrs = {"digits": [], "photos": []}
    t0 = time.time()
    for i in range(n):
        im = src.image(size, i)
        gid = f"bench-{size}-{i}"
        marked = wm.embed(im, gid, KEY)
        kind = "digits" if i % 2 == 0 else "photos"
        psnrs[kind].append(psnr(im, marked))
        truth = wm.payload_bits(gid, prof.payload)
        for name, attack in table.items():
            att = attack(marked)
            d = wm.decode_full(att, KEY)
            a = float(np.mean(np.array(d.bits) == truth))
            acc[name].append(a)
            acc_by[name][kind].append(a)
            tpr[name].append(wm.detect(att, gid, KEY))
            blind[name].append(d.watermarked and a == 1.0)
    t_marked = time.time() - t0
    t0 = time.time()
    null_scores, null_conf, null_blind = [], [], []
    resync_scores, resync_conf = [], []
    searched = prof.coded in wm.RESYNC_DETECT_SCORE  # no crop search at 8-15 px
    for i in range(n_null):
        im = src.image(size, i)
        null_scores.append(wm.score(im, f"null-{size}-{i}", KEY))
        d = wm.decode_full(im, KEY, resync=False)
        null_conf.append(d.confidence)
        null_blind.append(d.watermarked)
        # the crop re-synchronisation's search, which detect() and decode_full() run when the direct read fails
        rs, rc = wm.resync_scores(im, f"null-{size}-{i}", KEY) if searched else (-1.0, -1.0)
        resync_scores.append(rs)
        resync_conf.append(rc)
    thr, rthr = wm.DETECT_SCORE[prof.coded], wm.RESYNC_DETECT_SCORE.get(prof.coded, np.inf)
    fp = int(np.sum(np.array(null_scores) >= thr))
    fp_search = int(np.sum((np.array(null_scores) >= thr) | (np.array(resync_scores) >= rthr)))
    rblind = wm.RESYNC_BLIND_CONFIDENCE.get(prof.coded, np.inf)
    blind_fp_search = int(np.sum(np.array(null_blind) | (np.array(resync_conf) >= rblind)))
    all_psnr = psnrs["digits"] + psnrs["photos"]
    return {
        "size": size,
        "payload_bits": prof.payload,
        "coded_bits": prof.coded,
        "repeat": prof.repeat,
        "band": prof.band,
        "n_marked": n,
        "psnr_db": {
            "mean": round(float(np.mean(all_psnr)), 2),
            "min": round(float(np.min(all_psnr)), 2),
            "digits_mean": round(float(np.mean(psnrs["digits"])), 2),
            "photos_mean": round(float(np.mean(psnrs["photos"])), 2),
        },
        "attacks": {
            a: {
                "bit_accuracy": round(float(np.mean(acc[a])), 4),
                "bit_accuracy_digits": round(float(np.mean(acc_by[a]["digits"])), 4),
                "bit_accuracy_photos": round(float(np.mean(acc_by[a]["photos"])), 4),
                "detect_tpr": round(float(np.mean(tpr[a])), 4),
                "blind_decode_rate": round(float(np.mean(blind[a])), 4),
            }
            for a in table
        },
        "null": {
            "n": n_null,
            "detect_threshold": thr,
            "detect_false_positives": fp,
            "detect_fpr": fp / n_null,
            "score_max": round(float(np.max(null_scores)), 4),
            "score_p999": round(float(np.quantile(null_scores, 0.999)), 4),
            "blind_threshold": wm.BLIND_CONFIDENCE[prof.coded],
            "blind_false_positives": int(np.sum(null_blind)),
            "confidence_max": round(float(np.max(null_conf)), 4),
            "confidence_p999": round(float(np.quantile(null_conf, 0.999)), 4),
            "resync_candidates": len(wm._resync_plan(KEY, size, size).crops) if searched else 0,
            "resync_detect_threshold": rthr if searched else None,
            "resync_score_max": round(float(np.max(resync_scores)), 4),
            "detect_false_positives_with_search": fp_search,
            "resync_blind_threshold": rblind if searched else None,
            "resync_confidence_max": round(float(np.max(resync_conf)), 4),
            "blind_false_positives_with_search": blind_fp_search,
        },
        "seconds_marked": round(t_marked, 1),
        "seconds_null": round(time.time() - t0, 1),
    }


def fid_cost(size: int) -> dict:
    """FID of 1,000 real digits, unmarked vs marked, beside the floor (the reference net; trained once, cached)."""
    import torch

    from genloop.data import DataConfig, load_dataset
    from genloop.data.image import to_uint8
    from genloop.evaluation.protocol import feature_extractor
    from genloop.evaluation.suite import evaluate_images

    t0 = time.time()
    ds = load_dataset(DataConfig(name="digits", image_size=size))
    extractor = feature_extractor(ds, "ref", None, "cpu", False)
    train = ds.float_images("train")
    pick = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(123))[:1000]]
    versions = {"unmarked": to_uint8(pick).float() / 127.5 - 1.0, "marked": wm.mark_tensors(pick)}
    out: dict = {"size": size, "n": len(pick)}
    for name, images in versions.items():
        r = evaluate_images(images, ds, extractor, seed=0, metrics=("fid",))
        out[f"fid_{name}"] = round(float(r["fid"]), 4)
        out["fid_floor"] = round(float(r["fid_floor"]), 4)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--n", type=int, default=200, help="marked images per size")
    ap.add_argument("--n-null", type=int, default=10_000, help="unmarked images per size (the FPR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fid-sizes", default="8,32", help="digits sizes for the FID cost ('' for none)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "image_watermark.json"))
    args = ap.parse_args()
    t0 = time.time()
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        row = run_size(size, args.n, args.n_null, args.seed)
        rows.append(row)
        q = row["attacks"]
        print(
            f"{size:>3} px  payload {row['payload_bits']:>2} bits  PSNR {row['psnr_db']['mean']:.2f} dB "
            f"(min {row['psnr_db']['min']:.2f})  FPR {row['null']['detect_false_positives']}/{row['null']['n']}, with "
            f"the crop search {row['null']['detect_false_positives_with_search']}/{row['null']['n']}",
            flush=True,
        )
        for a, v in q.items():
            print(
                f"      {a:<24} bits {v['bit_accuracy']:.4f}  TPR {v['detect_tpr']:.3f}  "
                f"blind {v['blind_decode_rate']:.3f}",
                flush=True,
            )
    fid = [fid_cost(int(s)) for s in args.fid_sizes.split(",") if s.strip()]
    for row in fid:
        print(
            f"FID of real digits at {row['size']} px: unmarked {row['fid_unmarked']:.3f}, marked "
            f"{row['fid_marked']:.3f} (floor {row['fid_floor']:.3f})",
            flush=True,
        )
    result = {
        "benchmark": "image_watermark",
        "method": wm.SCHEME,
        "target_psnr_db": wm.TARGET_PSNR,
        "gains_searched": len(wm.GAINS),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "seconds": round(time.time() - t0, 1),
        "sizes": rows,
        "fid_cost_real_digits": fid,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
