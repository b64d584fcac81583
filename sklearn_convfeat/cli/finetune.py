"""``convfeat finetune``: a FineTuner fitted on DATA_DIR/train and scored."""

import argparse
import time

from ._inputs import training_inputs
from ._options import (
    add_batch_size,
    add_command,
    add_data_dir,
    add_image_options,
    add_quiet,
    add_save,
    add_weights,
    image_size_of,
    printer,
)
from ._report import accuracy_table


def add_parser(commands):
    command = add_command(
        commands,
        "finetune",
        help="fine-tune VGG16's top blocks with a dense head (FineTuner) on DATA_DIR",
        description=(
            "Fit FineTuner on DATA_DIR/train: phase 1 trains the dense head on the "
            "frozen base, phase 2 the top --unfreeze blocks with it. DATA_DIR/validation "
            "(when present) is the validation data of every epoch and of early "
            "stopping; accuracy is reported on validation/ and test/ when present. Each "
            "is a class-per-folder directory."
        ),
        epilog=(
            "example (the book's recipe, with early stopping instead of 100 epochs):\n"
            "  convfeat finetune cats_and_dogs_small --weights vgg16_notop.weights.h5 \\\n"
            "      --fine-tune-epochs 15 --early-stopping --patience 3 --save tuner.skops"
        ),
    )
    add_data_dir(command)
    add_weights(command)
    command.add_argument(
        "--unfreeze",
        type=_auto_or(int),
        default="auto",
        help="stages trained in phase 2, from the top: 1 is VGG16's block5, 0 skips phase "
        "2; auto: 1 when a probe of the frozen base finds the top stage best, else 2 "
        "(default: auto)",
    )
    from .. import FineTuner

    defaults = FineTuner().get_params()  # the estimator's defaults (__init__ stores only)
    for flag, kind, metavar, help in (
        ("--head-epochs", int, None, "epochs of phase 1"),
        ("--fine-tune-epochs", int, None, "epochs of phase 2"),
        ("--head-learning-rate", _auto_or(float), "LR",
         "peak learning rate of phase 1; auto: 1e-4 when the probe finds the top stage "
         "best, else 1e-3"),
        ("--fine-tune-learning-rate", _auto_or(float), "LR",
         "peak learning rate of phase 2; auto: 1e-5 when the probe finds the top stage "
         "best, else 1e-4"),
        ("--optimizer", str, None, "Keras optimizer of both phases"),
        ("--schedule", str, None, "learning rate over each phase: cosine or constant"),
        ("--tta", str, None, "test-time augmentation of the scores: flip, dihedral or none"),
    ):
        default = defaults[flag[2:].replace("-", "_")]
        command.add_argument(
            flag, type=kind, default=default, metavar=metavar,
            help=f"{help} (default: {default})",
        )
    command.add_argument(
        "--pooling",
        choices=["auto", "flatten", "avg"],
        default=defaults["pooling"],
        help="how the head makes a vector of the base's map: flatten (the book's), avg; "
        f"auto: flatten when the probe finds the top stage best, else avg "
        f"(default: {defaults['pooling']})",
    )
    command.add_argument(
        "--augment",
        choices=[*AUGMENT_CHOICES],
        default=_augment_choice(defaults["augment"]),
        help="auto: dihedral when a quarter turn leaves the probe's accuracy unchanged, "
        "else cached; cached: flips and one-cell shifts of the cached maps; flip: flips "
        "only; dihedral: the 8 symmetries of the square (aerial scenes) and the shifts; "
        "book: the book's image-space augmentation (rotation, shifts, shear, zoom, "
        "flips), which turns the frozen-prefix cache off; none "
        f"(default: {_augment_choice(defaults['augment'])})",
    )
    add_batch_size(command, default=20, help="training minibatch")
    command.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop each phase when the validation loss stops improving and keep its "
        "best weights (validation/, else 10%% of train/ held out)",
    )
    command.add_argument(
        "--patience",
        type=int,
        default=5,
        help="early-stopping patience in epochs (default: 5)",
    )
    command.add_argument(
        "--cache",
        choices=["auto", "memory", "disk", "none"],
        default="auto",
        help="where the frozen blocks' outputs are kept between epochs (default: auto)",
    )
    add_image_options(command)
    command.add_argument(
        "--seed", type=int, default=0, help="random_state of the FineTuner (default: 0)"
    )
    add_save(command, "FineTuner")
    add_quiet(command)


def run(args, out=None):
    from .. import FineTuner, save

    say = printer(out)
    weights, paths, labels, splits = training_inputs(args, say)
    tuner = FineTuner(
        backbone=args.backbone,
        weights=weights,
        unfreeze=args.unfreeze,
        image_size=image_size_of(args),
        preprocessing=args.preprocessing,
        augment=AUGMENT_CHOICES[args.augment],
        optimizer=args.optimizer,
        schedule=args.schedule,
        tta=None if args.tta in (None, "none") else args.tta,
        head_epochs=args.head_epochs,
        head_learning_rate=args.head_learning_rate,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        pooling=args.pooling,
        batch_size=args.batch_size,
        early_stopping=args.early_stopping,
        n_iter_no_change=args.patience,
        cache=None if args.cache == "none" else args.cache,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    say(f"fine-tuner: {tuner}")
    started = time.perf_counter()
    tuner.fit(paths, labels, validation_data=splits.get("validation"))
    fit_seconds = time.perf_counter() - started
    history = tuner.history_
    phase_2 = len(history["phase"]) - tuner.fine_tune_start_
    say(
        f"fitted in {fit_seconds:.1f} s: phase 1 ran {tuner.fine_tune_start_} epoch(s), "
        f"phase 2 {phase_2} (unfreeze {tuner.unfreeze_}, learning rates "
        f"{tuner.head_learning_rate_:g}/{tuner.fine_tune_learning_rate_:g}, pooling {tuner.pooling_}, augment "
        f"{tuner.augment_!r}); "
        f"frozen-prefix cache: {tuner.cache_ or 'off'}; "
        f"last epoch's training accuracy {history['accuracy'][-1]:.4f}"
    )
    rows = []
    for split, (split_paths, split_labels) in splits.items():
        start = time.perf_counter()
        accuracy = tuner.score(split_paths, split_labels)
        rows.append((split, len(split_paths), accuracy, time.perf_counter() - start))
    if rows:
        accuracy_table(say, rows, timing="predict s")
    say(f"wall time (fit + evaluate): {time.perf_counter() - started:.1f} s")
    if args.save:
        save(tuner, args.save)
        say(f"saved the fitted FineTuner to {args.save}")
    return tuner


# --augment's choices → FineTuner's augment.
AUGMENT_CHOICES = {"auto": "auto", "cached": "cached", "flip": "flip",
                   "dihedral": "dihedral", "book": True, "none": False}


def _auto_or(kind):
    """An argparse type: 'auto', or a value of ``kind``."""
    def parse(value):
        if value == "auto":
            return value
        try:
            return kind(value)
        except ValueError:
            example = "2" if kind is int else "1e-4"
            raise argparse.ArgumentTypeError(
                f"must be 'auto' or a number, e.g. {example}; got {value!r}"
            ) from None

    return parse


def _augment_choice(augment):
    return next(name for name, value in AUGMENT_CHOICES.items() if value is augment
                or value == augment and not isinstance(augment, bool))
