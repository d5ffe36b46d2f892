"""What the tasks print: progress without a terminal."""

from db.report import ProgressPrinter


def test_without_a_terminal_progress_is_a_line_per_tenth_of_the_work(capsys):
    progress = ProgressPrinter("images", on_terminal=False)

    for done in range(0, 100_001, 2_500):
        progress(done, 100_000)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "images: 0/100,000 (0%)"
    assert lines[-1] == "images: 100,000/100,000 (100%)"
    assert [line.rsplit("(", 1)[1] for line in lines] == [f"{n}%)" for n in range(0, 101, 10)]


def test_a_single_step_prints_one_line(capsys):
    ProgressPrinter("images", on_terminal=False)(300, 300)

    assert capsys.readouterr().out == "images: 300/300 (100%)\n"
