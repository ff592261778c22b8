"""DVC stage `table`: the versioned metrics table and the figures (see cardiac_sr.report)."""

from _common import run

from cardiac_sr.report import write_figures, write_table


def main(params: dict) -> None:
    rows = write_table(params)
    for r in rows:
        print(f"{r['method']:>14}: PSNR {r['psnr']:.2f} dB ({r['psnr_gain_db']:+.2f} vs bicubic), SSIM {r['ssim']:.4f}")
    for path in write_figures(params):
        print("figure:", path)


if __name__ == "__main__":
    run(main)
