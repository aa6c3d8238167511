"""`enlighten-ray eval`: NIQE, PSNR/SSIM, the paper's Table 1 and contact sheets.

Examples:
  enlighten-ray eval niqe "$ENLIGHTEN_DATA/eval/DICM" outputs/DICM --json niqe.json
  enlighten-ray eval pairs outputs/LOL15 "$ENLIGHTEN_DATA/eval/LOL15/high"
  enlighten-ray eval table --weights generator.pt --data "$ENLIGHTEN_DATA/eval" --baselines \\
      --compare authors=authors_outputs --json table.json
  enlighten-ray eval sheet "$ENLIGHTEN_DATA/eval/LIME" outputs/LIME -o sheet.png -o sheet.html
  enlighten-ray eval curve runs/cpu --images "$ENLIGHTEN_DATA/train/low" --holdout configs/holdout_low.txt \\
      --json curve.json --plot curve.png
  enlighten-ray eval video night.mp4 night_bright.mp4 --json video.json
"""

from __future__ import annotations

import argparse
import sys

from enlighten_ray.errors import BadInputError


def _name_dir(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, folder


def _thumb_height(text: str) -> int:
    value = int(text)
    if value < 16:
        raise argparse.ArgumentTypeError(f"must be at least 16, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="NIQE, PSNR/SSIM, the paper's Table 1 and before/after sheets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="WHAT")

    q = sub.add_parser("niqe", help="NIQE (MATLAB-release calibrated) per image and mean per folder")
    q.add_argument("paths", nargs="+", metavar="PATH", help="image folders (recursed) or image files")
    q.add_argument("--json", metavar="FILE", help="also write the scores as JSON")

    q = sub.add_parser("pairs", help="PSNR and SSIM of files with the same name in two folders")
    q.add_argument("pred_dir", metavar="PRED_DIR", help="enhanced images")
    q.add_argument("ref_dir", metavar="REF_DIR", help="reference images (same names, any extension)")
    q.add_argument("--json", metavar="FILE", help="also write the scores as JSON")

    q = sub.add_parser("table", help="the paper's Table 1 (mean NIQE on MEF, LIME, NPE, VV, DICM) for a model")
    q.add_argument(
        "--weights",
        help="generator file, checkpoint or run directory, or *_net_G_A.pth, as a path or URI "
        "(default: the shipped model)",
    )
    q.add_argument("--data", required=True, metavar="DIR", help="folder holding MEF, LIME, NPE, VV, DICM")
    q.add_argument(
        "--compare",
        action="append",
        type=_name_dir,
        default=[],
        metavar="NAME=DIR",
        help="extra row: saved outputs of another method in DIR/<set>/ (repeatable)",
    )
    q.add_argument("--baselines", action="store_true", help="add the AHE (CLAHE) and LIME-style rows")
    q.add_argument("--out", metavar="DIR", help="keep the enhanced images in DIR/<row>/<set>/ (default: temporary)")
    q.add_argument("--json", metavar="FILE", help="also write the table and per-image scores as JSON")

    _add_review_parsers(sub)
    p.set_defaults(func=run)


def _add_review_parsers(sub: argparse._SubParsersAction) -> None:
    """curve, sheet and video: the subcommands that review a run or an output."""
    q = sub.add_parser("curve", help="a run's learning curve: held-out NIQE, brightness and losses per checkpoint")
    q.add_argument("run", metavar="RUN_DIR", help="training run directory (holding checkpoint_*)")
    q.add_argument("--images", required=True, metavar="DIR", help="the low images folder (data.low)")
    q.add_argument("--holdout", required=True, metavar="FILE", help="the hold-out list (data.holdout)")
    q.add_argument("--json", metavar="FILE", help="write the rows here; checkpoints already in it are reused")
    q.add_argument("--plot", metavar="PNG", help="also plot the curve")
    q.add_argument(
        "--video", metavar="FILE", help="also brightness and casts on this evaluation video's first 60 frames"
    )

    q = sub.add_parser("sheet", help="before/after contact sheet: a column per folder, a row per image")
    q.add_argument("input_dir", metavar="INPUT_DIR", help="the original images (one row each)")
    q.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="enhanced copies (same names)")
    q.add_argument(
        "-o",
        "--output",
        action="append",
        required=True,
        metavar="FILE",
        help="sheet.png (or .jpg) and/or sheet.html; repeatable",
    )
    q.add_argument("--height", type=_thumb_height, default=160, help="thumbnail height in pixels (default: 160)")

    q = sub.add_parser(
        "video", help="a video and its enhanced copy: brightness, flicker, temporal noise, block grid, dark cast"
    )
    q.add_argument("input", metavar="INPUT", help="the original video")
    q.add_argument("output", metavar="OUTPUT", help="its enhanced copy (same frames)")
    q.add_argument("--frames", type=int, metavar="N", help="compare the first N frames only (default: all)")
    q.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    """Exit code 0, 1 when some image could not be scored (each is reported; the rest is done), 2
    when there is nothing to score (an empty folder, no matching names), as `enhance` and `batch`."""
    from enlighten_ray.eval import sheet  # torch: at run time, so --help stays fast
    from enlighten_ray.eval import table as evaluate

    if args.eval_command == "niqe":
        report = evaluate.niqe_report(args.paths)
        for entry in report:
            if not entry["images"] and not entry["errors"]:
                raise BadInputError(entry["path"], "no images to score")
        print(evaluate.format_niqe(report))
        failed = any(entry["errors"] for entry in report)
    elif args.eval_command == "pairs":
        report = evaluate.pairs_report(args.pred_dir, args.ref_dir)
        if not report["pairs"] and not report["errors"]:
            raise BadInputError(
                args.pred_dir, f"no image has a namesake in {args.ref_dir} (names compared without extension)"
            )
        print(evaluate.format_pairs(report))
        failed = bool(report["errors"])
    elif args.eval_command == "table":
        compare = dict(args.compare)
        if len(compare) != len(args.compare):
            raise BadInputError("--compare", "two rows share a NAME")
        report = evaluate.table_report(args.weights, args.data, compare, args.baselines, args.out)
        print(evaluate.format_table(report))
        failed = any(row["errors"] for row in report["rows"].values())
    elif args.eval_command == "curve":
        return _curve(args)
    elif args.eval_command == "video":
        return _video(args)
    else:
        w, h = sheet.make_sheet(args.input_dir, args.output_dirs, args.output, args.height)
        print(f"sheet {w}x{h}: {', '.join(args.output)}")
        return 0
    if getattr(args, "json", None):
        evaluate.write_json(report, args.json)
    if failed:
        print("enlighten-ray eval: some images could not be scored (listed above)", file=sys.stderr)
    return 1 if failed else 0


def _video(args: argparse.Namespace) -> int:
    import json

    from enlighten_ray.eval import table as evaluate
    from enlighten_ray.eval.video import compare_videos

    report = compare_videos(args.input, args.output, args.frames)
    print("\n".join(report.lines()))
    print(json.dumps(report.to_dict()))
    if args.json:
        evaluate.write_json(report.to_dict(), args.json)
    return 0


def _curve(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from enlighten_ray.eval import curve
    from enlighten_ray.eval import table as evaluate

    known = {}
    if args.json and Path(args.json).is_file():
        known = {row["checkpoint"]: row for row in json.loads(Path(args.json).read_text())}
    rows = curve.checkpoint_curve(args.run, curve.holdout_images(args.images, args.holdout), known, args.video)
    video, nan = " video: luma cast dark" if args.video else "", float("nan")
    print(f"{'checkpoint':<40} {'epoch':>5} {'NIQE':>6} {'luma':>6}  R/G/B      cast dark{video}")
    for r in rows:
        line = (
            f"{r['checkpoint']:<40} {r['epoch']:>5} {r['niqe']:>6.3f} {r['luma']:>6.1f}  "
            f"{r['r']:.0f}/{r['g']:.0f}/{r['b']:.0f} {r.get('cast', nan):>5.2f} {r.get('dark_cast', nan):.2f}"
        )
        if args.video:
            line += f"  {r['dashcam_luma']:>5.1f} {r['dashcam_cast']:.2f} {r['dashcam_dark_cast']:.2f}"
        print(line)
    if args.json:
        evaluate.write_json(rows, args.json)
    if args.plot:
        curve.plot_curve(rows, args.plot, title=f"{Path(args.run).name}: {len(rows) - 1} checkpoints")
    return 0
