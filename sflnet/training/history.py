"""history.csv: its columns, writing it row by row, reading it back and cutting it at an epoch.

history.csv
-----------
Header ``epoch,E,E_PL,E_SFL,sfl_0.8,sfl_1.6,sfl_3.2,[E_<TERM>...,]seconds`` (one
``sfl_`` column per σ, named ``f"sfl_{sigma:g}"``). ``E`` is the trained objective,
the weighted sum of the ``--loss`` expression's terms (``E_PL`` for ``pl``,
``E_PL + E_SFL`` for ``pl+sfl``). The paper's columns are there for every run:
``E_PL`` and ``E_SFL`` (with the configured subband weights) and the ``sfl_``
unit-weight subband losses are measured even when they are not trained (by the CAE;
a VAE's training steps measure only its objective's terms, and leave an untrained
paper's column ``nan``: ``sflnet evaluate`` measures them). Each
term of the expression that is not ``pl`` or ``sfl`` adds one column
``E_<NAME>`` (``E_FFT``, ``E_SSIM``...), its unit-weight value, in expression order.
Losses are written with Python's shortest round-trip ``repr`` so they can be
compared exactly. ``seconds`` is the wall time of the epoch's computation. With
mini-batches (``batch_size > 0``) a row is the image-weighted mean of the
per-step losses, each measured before its own step (:func:`combine_rows`).

Row ``epoch = k`` holds the losses measured **before** epoch k's update (with the
parameters after k−1 updates), see :mod:`sflnet.training.run`.
"""

import contextlib
import csv
import math
import os

from sflnet.io.checkpoint import write_text_atomic
from sflnet.errors import SflnetError
from sflnet.losses import extra_column, extra_term_names, parse, subband_column


def history_columns(sigmas, extra_terms=()):
    """``["epoch", "E", "E_PL", "E_SFL", "sfl_0.8", ..., "E_<TERM>", ..., "seconds"]``.

    extra_terms: the loss names of the objective's terms other than pl and sfl, in expression order,
    then the model's own logged terms (the VAE's ``kl``).
    """
    return ["epoch", "E", "E_PL", "E_SFL", *(subband_column(s) for s in sigmas),
            *(extra_column(name) for name in extra_terms), "seconds"]


def extra_terms(expression):
    """The terms of an expression that add a history column (all but pl and sfl)."""
    return extra_term_names(parse(expression))



def result_row(result, sigmas, extra):
    """The history values of one :class:`LossResult`: {"E", "E_PL", "E_SFL", "sfl_<σ>"..., "E_<TERM>"...}.

    A paper's column whose loss the step did not measure (a VAE step whose objective does not train
    ``pl`` or ``sfl``, see :meth:`sflnet.models.base.Model.loss_and_grads`) is ``nan``.
    """
    row = {"E": result.E, "E_PL": result.terms.get("pl", math.nan), "E_SFL": result.terms.get("sfl", math.nan)}
    subbands = result.sfl if "sfl" in result.terms else [math.nan] * len(sigmas)
    for sigma, value in zip(sigmas, subbands):
        row[subband_column(sigma)] = float(value)
    for name in extra:
        row[extra_column(name)] = result.terms[name]
    return row


def combine_rows(results, sizes, sigmas, extra=()):
    """One history row from the per-step results of an epoch (exact copy for a single full-batch step).

    With mini-batches each value is the image-weighted mean of the per-step values.
    """
    rows = [result_row(r, sigmas, extra) for r in results]
    if len(rows) == 1:
        return rows[0]
    total = float(sum(sizes))
    return {key: sum(row[key] * n for row, n in zip(rows, sizes)) / total for key in rows[0]}


def format_row(row, columns):
    """One CSV line (with newline). Losses use repr (exact round trip), seconds 6 decimals."""
    cells = []
    for name in columns:
        value = row[name]
        if name == "epoch":
            cells.append(str(int(value)))
        elif name == "seconds":
            cells.append(f"{value:.6f}")
        else:
            cells.append(repr(float(value)))
    return ",".join(cells) + "\n"


def read_history(path, columns=None):
    """Rows of a history.csv as dicts of floats (``epoch`` as int).

    A last line without its newline (cut by a crash) is ignored. If
    ``columns`` is given the header must equal it (see :func:`history_columns`).
    Raises SflnetError for an unreadable or malformed file.
    """
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            text = stream.read()
    except OSError as exc:
        raise SflnetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_history(text, path, columns)[0]


def parse_history(text, path, columns=None):
    """(rows as dicts, complete raw lines without the header) of history.csv text."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    if not lines:
        raise SflnetError(f"{path} is empty (no header)")
    header = lines[0].rstrip("\r\n").split(",")
    if columns is not None and header != list(columns):
        raise SflnetError(f"{path} has header {','.join(header)}, expected {','.join(columns)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            raise SflnetError(f"{path} line {number} has {len(cells)} fields, expected {len(header)}")
        try:
            row = {name: float(cell) for name, cell in zip(header, cells)}
            row["epoch"] = int(cells[0])
        except ValueError:
            raise SflnetError(f"{path} line {number} is not numeric: {line.strip()}") from None
        rows.append(row)
    return rows, lines[1:]


class HistoryWriter:
    """Appends rows to history.csv, flushing after each row (a crash loses at most a partial line)."""

    def __init__(self, path, columns):
        self.path = path
        self.columns = columns
        try:
            self._stream = open(path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise SflnetError(f"cannot write {path}: {exc.strerror or exc}") from None

    def append(self, row):
        try:
            self._stream.write(format_row(row, self.columns))
            self._stream.flush()
        except OSError as exc:
            raise SflnetError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def sync(self):
        """Flush and fsync (called at checkpoint time; errors here are reported by the next write)."""
        with contextlib.suppress(OSError):
            self._stream.flush()
            os.fsync(self._stream.fileno())

    def close(self):
        if self._stream.closed:
            return
        with contextlib.suppress(OSError):
            self.sync()
            self._stream.close()


def truncate_history(path, columns, epoch):
    """Keep the header and rows 1..``epoch`` of history.csv (rewritten atomically).

    Rows after ``epoch`` come from a run that crashed or was interrupted after
    writing them but before its checkpoint; resuming from ``epoch`` recomputes
    them. Raises SflnetError if rows 1..epoch are not all there.
    """
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            text = stream.read()
    except OSError as exc:
        raise SflnetError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows, lines = parse_history(text, path, columns)
    kept = [line for row, line in zip(rows, lines) if row["epoch"] <= epoch]
    epochs = [row["epoch"] for row in rows if row["epoch"] <= epoch]
    if epochs != list(range(1, epoch + 1)):
        raise SflnetError(f"{path} does not hold rows 1..{epoch} in order (it has {len(epochs)} of them), "
                          f"so the run cannot be resumed exactly; start again with --overwrite")
    write_text_atomic(path, ",".join(columns) + "\n" + "".join(kept), what="history")
