"""DVC stage `table`: the versioned metrics table and the figures (see cardiac_sr.report)."""

from _common import arguments, run

from cardiac_sr.params import Params
from cardiac_sr.report import write_figures, write_table


def main(params: Params, args) -> None:
    rows = write_table(params, args.metrics)
    for r in rows:
        for prefix, where in (("", "test"), ("ext_", "external")):
            if r.get(f"{prefix}psnr") is not None:
                print(f"{r['method']:>14} ({where}): PSNR {r[prefix + 'psnr']:.2f} dB "
                      f"({r[prefix + 'psnr_gain_db']:+.2f} vs bicubic), SSIM {r[prefix + 'ssim']:.4f}")
    for path in write_figures(params.need("degrade"), args.prepared, args.degraded, args.models, args.metrics,
                              out_dir=f"{args.metrics}/plots", external_dir=args.external):
        print("figure:", path)


if __name__ == "__main__":
    run(main, tensorflow=True, args=arguments(__doc__, ("prepared", "degraded", "external", "models", "metrics")))
