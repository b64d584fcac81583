"""The tables ``convfeat evaluate`` and ``convfeat finetune`` print."""


def accuracy_table(say, rows, *, timing="extract s", with_fit=False):
    """One line per (split, images, accuracy, seconds[, fit seconds]) row."""
    header = f"{'split':<11}{'images':>7}{'accuracy':>10}{timing:>11}"
    if with_fit:
        header += f"{'img/s':>8}{'fit s':>8}"
    say()
    say(header)
    for split, n, accuracy, seconds, *fit in rows:
        line = f"{split:<11}{n:>7}{accuracy:>10.4f}{seconds:>11.1f}"
        if with_fit:
            line += f"{n / seconds:>8.1f}{fit[0]:>8.1f}"
        say(line)
