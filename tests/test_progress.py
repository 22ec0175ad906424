"""A long job says where it is: a bar in a terminal (none in a log file), per-epoch training
lines whose fields parse, and, when asked, the same numbers as TensorBoard scalars."""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from pathlib import Path

import pytest

from synthpre import job_settings
from synthpre.progress import Progress, TerminalLogHandler
from synthpre.config import load_config
from synthpre.train import train_config as job_config
from synthpre.trainer import train

from defaults import train_config
from test_trainer import carbon_records, tiny_model

REPO = Path(__file__).resolve().parents[1]


def read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks).decode()


@pytest.fixture
def terminal():
    """A pseudo-terminal: (stream the job writes to, fd to read what the user would see)."""
    main, side = os.openpty()
    stream = os.fdopen(side, "w")
    yield stream, main
    stream.close()
    os.close(main)


def test_a_terminal_gets_a_bar_that_ends_its_line(terminal, monkeypatch):
    import synthpre.progress
    monkeypatch.setattr(synthpre.progress, "BAR_INTERVAL_S", 0.0)
    stream, screen = terminal
    progress = Progress("md t0", 10, unit="steps", stream=stream, lines=False)
    for done in (2, 5, 10):
        progress.update(done)
    shown = read_all(screen)
    bars = re.findall(r"md t0 \[([#.]{30})\] (\d+)/10 steps, ([\d.]+) steps/s, ETA (\d+) s",
                      shown)
    assert [(b.count("#"), int(done)) for b, done, *_ in bars] == [(6, 2), (15, 5), (30, 10)]
    assert shown.endswith("ETA 0 s\r\n")  # the pty turns \n into \r\n


def test_log_lines_go_above_the_bar_and_a_log_file_gets_no_bar(terminal, monkeypatch):
    import synthpre.progress
    monkeypatch.setattr(synthpre.progress, "BAR_INTERVAL_S", 0.0)
    stream, screen = terminal
    logger = logging.getLogger("test_progress")
    handler = TerminalLogHandler(stream)
    logger.addHandler(handler)
    try:
        progress = Progress("label", 4, unit="frames", stream=stream, lines=False)
        progress.update(1)
        logger.warning("a line in between")
        shown = read_all(screen)
        # the bar's line is cleared, the record written, the bar drawn again below it
        assert re.search(r"\r\x1b\[Ka line in between\r?\n\r\x1b\[Klabel \[#{8}\.{22}\] 1/4",
                         shown)
        progress.close()
        assert read_all(screen) == "\r\n"
    finally:
        logger.removeHandler(handler)
    log_file = io.StringIO()
    quiet = Progress("label", 4, unit="frames", stream=log_file)
    for done in range(1, 5):
        quiet.update(done)
    assert log_file.getvalue() == ""


def test_epoch_lines_parse_and_tensorboard_holds_the_same_numbers(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_recs, val_recs = carbon_records(4, 0), carbon_records(2, 1)
    cfg = train_config(max_epochs=3, batch_size=2, lr=1e-2, patience=100, tensorboard=True)
    with caplog.at_level("INFO", logger="synthpre.trainer"):
        train(tiny_model(train_recs), train_recs, val_recs, cfg, tmp_path, name="pretrain test")
    lines = re.findall(r"pretrain test: epoch (\d+), train loss ([\d.e+-]+), val E ([\d.e+-]+) "
                       r"eV/atom, val F ([\d.e+-]+) eV/Å, lr ([\d.e+-]+), ([\d.]+) s/epoch, "
                       r"at most (\d+) s to max_epochs", caplog.text)
    assert [int(epoch) for epoch, *_ in lines] == [1, 2, 3]
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for (epoch, loss, e, f_rmse, lr, seconds, eta), row in zip(lines, rows, strict=True):
        assert float(loss) == pytest.approx(float(row["train_loss"]), rel=1e-4)
        assert float(f_rmse) == pytest.approx(float(row["val_force_rmse"]), rel=1e-3)
        assert float(lr) == pytest.approx(0.01) and float(seconds) > 0
    assert int(lines[-1][-1]) == 0  # nothing left after the last epoch
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    for key in ("train_loss", "val_energy_rmse_per_atom", "val_force_rmse", "lr"):
        events = board.Scalars(key)
        assert [ev.step for ev in events] == [1, 2, 3], key
        assert [ev.value for ev in events] == pytest.approx(
            [float(row[key]) for row in rows], rel=1e-5), key


def test_tensorboard_is_off_by_the_schema_and_the_train_section_switches_it_on():
    validated = load_config(str(REPO / "config.yaml"))
    assert validated["train"]["tensorboard"] is False
    assert "tensorboard" not in validated["pretrain"] and "tensorboard" not in validated["finetune"]

    def config_of(stage):
        return job_config(job_settings.train(validated, stage),
                          job_settings.train_run_options(validated, stage), "cpu")
    for stage in ("pretrain", "finetune", "scratch"):
        assert config_of(stage).tensorboard is False
    validated["train"]["tensorboard"] = True
    validated["finetune"]["tensorboard"] = False
    assert config_of("pretrain").tensorboard is True
    assert config_of("scratch").tensorboard is False
