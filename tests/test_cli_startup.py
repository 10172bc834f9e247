"""What ``sflnet`` imports when it starts, and the help that is built later instead.

Every ``sflnet`` command imports every command module (cli/main.py registers them all), so a heavy
import at the top of one command module delays all of them: ``sflnet gradcheck``'s suite alone
(its references import the whole of ``scipy.signal``) used to cost about 0.7 s of each start. The
modules a command only needs while it runs are imported inside the command; the help texts that
list registered things (the checked layers, the losses, the models) are built when the help is
shown. No timing is asserted: the modules that must stay unimported are checked in a fresh
interpreter.
"""

import subprocess
import sys

import pytest

from sflnet import gradcheck
from sflnet_cli.main import main

# Modules the start of ``sflnet`` (import of sflnet_cli.main, ``sflnet --help``) must not import.
NOT_AT_START = ("sflnet.gradcheck", "scipy", "matplotlib", "sflnet.figures", "sflnet.training.run",
                "sflnet.training.trainer", "sflnet.training.evaluation", "sflnet.training.calibrate",
                "sflnet.io.store", "sflnet.io.digits", "sflnet.training.source")


def _imported_after(code):
    """The modules of NOT_AT_START (or under them) loaded after running ``code`` in a fresh interpreter."""
    probe = (code + "\nimport sys\n"
             f"names = {NOT_AT_START!r}\n"
             "for n in sorted({n for m in sys.modules for n in names if m == n or m.startswith(n + '.')}):\n"
             "    print('imported:', n)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.split(None, 1)[1] for line in done.stdout.splitlines() if line.startswith("imported: ")]


def test_starting_sflnet_imports_no_command_work():
    assert _imported_after("import sflnet_cli.main") == []


def test_the_group_help_imports_no_command_work():
    done = _imported_after("from sflnet_cli.main import cli\n"
                           "cli.main(['--help'], prog_name='sflnet', standalone_mode=False)")
    assert done == []


def _words(text):
    return " ".join(text.split())


def test_gradcheck_help_names_every_checked_layer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradcheck", "--help"])
    assert exit_info.value.code == 0
    out = _words(capsys.readouterr().out)
    assert f"Only this layer's rows: one of {', '.join(gradcheck.layer_names())}." in out


def test_gradcheck_layer_is_still_checked_against_the_suite(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["gradcheck", "--device", "cpu", "--layer", "nosuchlayer"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --layer 'nosuchlayer'")
    assert ", ".join(gradcheck.layer_names()) in err[0]
