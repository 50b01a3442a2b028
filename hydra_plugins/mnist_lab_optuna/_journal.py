"""The study's journal file, read whole before the search writes a line to it.

Optuna's journal is one JSON operation a line. Optuna replays it at every open, but a line it
cannot parse is only an error once another follows, so a search could append after a damaged
line and spread the damage. Here every complete line is parsed and replayed as Optuna replays
it before anything is written; the first damaged one is named with the command that keeps the
readable part. An unfinished last line is a killed write: in the sweep folder's own journal it
is cut (it never happened); in a shared one it may be another machine's write in progress.
"""

from __future__ import annotations

import json
import os
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.storages.journal._storage import JournalOperation, JournalStorageReplayResult

from mnist_lab.core.console import console, one_line
from mnist_lab.core.errors import UserError
from mnist_lab.core.files import replacing
from mnist_lab.rundir import layout

_KNOWN = {op.value for op in JournalOperation}
# Beside the sweep folder (``<sweep>.lost-trials/<time>/``), where the refusal's command moves
# the job folders of trials the kept lines do not hold: inside it they would be its jobs.
LOST = ".lost-trials"
# Beside the journal: the bytes of an unfinished last line that repair_journal cut.
UNFINISHED = ".unfinished"


def repair_journal(path: Path) -> None:
    """A kill during a write can leave half a line at the end of the journal; Optuna would
    refuse the file once another line follows it. Cut it: that change never happened. The cut
    bytes are kept beside it (``<journal>.unfinished``): a file that only looks like a killed
    write (lines ended otherwise than by ``\\n``) loses nothing."""
    if not path.is_file():
        return  # absent, or something else in its place: check_journal and Optuna say so
    try:
        with path.open("rb+") as f:
            size = f.seek(0, 2)
            if size == 0 or (f.seek(size - 1) >= 0 and f.read(1) == b"\n"):
                return
            f.seek(0)
            data = f.read()
            end = data.rfind(b"\n") + 1
            kept = path.with_name(path.name + UNFINISHED)
            with replacing(kept) as tmp:
                tmp.write_bytes(data[end:])
            f.truncate(end)
    except OSError as ex:
        raise UserError(f"cannot read the study journal {path}: {ex.strerror or ex}") from ex
    console.print(
        f"{path}: dropped an unfinished last line of {size - end} bytes (a killed write); "
        f"kept in {kept}",
        markup=False,
    )


def check_journal(path: Path, sweep_dir: Path, study_name: str) -> None:
    """Refuse a journal with a line Optuna cannot replay: one line naming it, nothing written.
    Its command also moves aside the job folders of the trials that keeping part would lose,
    which the search would otherwise refuse as strangers."""
    if not os.path.lexists(path):
        return  # a new search
    if not path.is_file():
        raise UserError(
            f"the study journal {path} is not a file (a folder, a FIFO or a device): "
            "expected Optuna's journal file, or nothing there; choose a new hydra.sweep.dir"
        )
    try:
        # Optuna ends every operation with "\n"; the part after the last is being written (a
        # shared journal), or a killed write that repair_journal cuts.
        *lines, unfinished = path.read_bytes().split(b"\n")
    except OSError as ex:
        raise UserError(f"cannot read the study journal {path}: {ex.strerror or ex}") from ex
    if b"\r" in unfinished.rstrip(b"\r"):  # lines ended by "\r" alone: not Optuna's file
        lines.append(unfinished)
    replay = JournalStorageReplayResult("mnist-lab-check-")
    for number, line in enumerate(lines, start=1):
        # "\r\n" (a journal that went through Windows) is whitespace to JSON, and to Optuna.
        bare_cr = b"\r" in line.rstrip(b"\r")
        damage = "lines ended by carriage returns" if bare_cr else _damage(line)
        if damage is None:
            try:
                replay.apply_logs([json.loads(line)])
            except Exception as ex:  # whatever Optuna's replay raises: it would raise it too
                damage = f"Optuna cannot replay it ({one_line(ex)})"
        if damage is not None:
            lost = _lost_folders(replay, sweep_dir, study_name)
            raise UserError(_refusal(path, number, damage, sweep_dir, lost))


def _damage(line: bytes) -> str | None:
    try:
        log: Any = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    except RecursionError:
        return "not an Optuna operation (JSON nested thousands of levels deep)"
    if not isinstance(log, dict) or not isinstance(log.get("worker_id"), str):
        return "not an Optuna operation (a JSON object with op_code and worker_id)"
    op = log.get("op_code")
    if isinstance(op, bool) or not isinstance(op, int) or op not in _KNOWN:
        return f"an operation Optuna does not know (op_code {op!r})"
    return None


def _lost_folders(
    replay: JournalStorageReplayResult, sweep_dir: Path, study_name: str
) -> list[str]:
    """The sweep folder's job folders whose trials are not in the lines replayed so far."""
    kept = {
        t.number
        for s in replay.get_all_studies()
        if s.study_name == study_name
        for t in replay.get_all_trials(s._study_id, states=None)
    }
    if not sweep_dir.is_dir():
        return []
    found = [d for d in sweep_dir.iterdir() if d.name.isdigit() and (d / layout.HYDRA).is_dir()]
    return sorted((d.name for d in found if int(d.name) not in kept), key=int)


def _refusal(path: Path, number: int, damage: str, sweep_dir: Path, lost: list[str]) -> str:
    quoted, kept = shlex.quote(str(path)), shlex.quote(f"{path}.readable")
    keep = f"head -n {number - 1} {quoted} > {kept} && mv {kept} {quoted}"
    if lost:
        # A folder of its own each time: a second repair never meets the first one's folders.
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        aside = shlex.quote(str(sweep_dir.with_name(sweep_dir.name + LOST) / stamp))
        folders = " ".join(shlex.quote(str(sweep_dir / name)) for name in lost)
        keep += f" && mkdir -p {aside} && mv {folders} {aside}/"
    return (
        f"the study journal {path} is damaged at line {number}: {damage}; the search writes "
        f"nothing to a journal it cannot read whole. To keep the {number - 1} lines before it "
        f"(the trials recorded after it are lost): {keep}; or choose a new hydra.sweep.dir"
    )
