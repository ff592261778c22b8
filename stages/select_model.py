"""DVC stage `select`: publish the model chosen by the top-level params `loss` and `upsampling`."""

from _common import run

from cardiac_sr.report import select_model


def main(params: dict) -> None:
    print("selected:", select_model(params))


if __name__ == "__main__":
    run(main, tensorflow=True)
