"""DVC stage `select`: publish the model chosen by the top-level params `loss` and `upsampling`."""

from _common import arguments, run

from cardiac_sr.params import Params
from cardiac_sr.report import select_model


def main(params: Params, args) -> None:
    print("selected:", select_model(params.loss, params.upsampling, args.models, args.metrics))


if __name__ == "__main__":
    run(main, tensorflow=True, args=arguments(__doc__, ("models", "metrics")))
