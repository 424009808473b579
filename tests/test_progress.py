"""Progress of long work: plain lines at a bounded rate off a terminal, a bar with rate and ETA on one."""

import io

from shopllm.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_progress_is_a_plain_line_now_and_then(monkeypatch):
    clock = iter(range(0, 1000, 5))  # every update is 5 s later
    monkeypatch.setattr("shopllm.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("score: described", total=100, unit="items", stream=out, every_s=15)
    for _ in range(10):
        p.update(10)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 4  # 50 s of work, a line at most every 15 s
    assert lines[0].startswith("score: described: ") and "items/s" in lines[0] and "ETA" in lines[0]


def test_on_a_terminal_progress_is_a_bar_with_rate_and_eta():
    out = Terminal()
    p = Progress("train", total=50, unit="steps", stream=out)
    for _ in range(50):
        p.update(1)
    p.line("eval step 50: ndcg@10 0.5")
    p.close()
    text = out.getvalue()
    assert "train" in text and "50/50" in text and ("steps/s" in text or "s/steps" in text)
    assert "eval step 50: ndcg@10 0.5" in text
