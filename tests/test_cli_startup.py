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


@pytest.mark.parametrize("case", ["empty folder", "missing path", "out is a file"])
def test_a_prepare_error_is_one_line_without_the_progress_label(tmp_path, capsys, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "a_file").write_text("not a store")
    image = tmp_path / "images"
    image.mkdir()
    from PIL import Image  # noqa: PLC0415

    Image.new("RGB", (8, 6), (10, 20, 30)).save(image / "one.png")
    data, out, named = {"empty folder": (empty, tmp_path / "store", "no image files"),
                        "missing path": (tmp_path / "nowhere", tmp_path / "store", "does not exist"),
                        "out is a file": (image, tmp_path / "a_file", "not a folder")}[case]
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(data), "--out", str(out), "--workers", "1"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and named in err[0], err
    assert not (tmp_path / "store").exists()


def test_prepare_still_shows_its_progress(tmp_path, capsys):
    from PIL import Image  # noqa: PLC0415

    (tmp_path / "images").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 6), (10 * i, 20, 30)).save(tmp_path / "images" / f"im{i}.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(tmp_path / "images"), "--out", str(tmp_path / "store"), "--size", "0",
              "--workers", "1"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0].startswith("prepare")
    assert "2 images" in captured.out
