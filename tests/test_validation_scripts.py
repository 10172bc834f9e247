"""The validation scripts end a bad input as the command line does: one line, exit status 1, no
traceback (``sflnet.errors.run_script``), and before any long computation."""

import pathlib
import subprocess
import sys

import pytest

from sflnet.errors import SflnetError, run_script

VALIDATION = pathlib.Path(__file__).resolve().parents[1] / "validation"


def test_run_script_turns_a_user_error_into_one_line_and_status_1(capsys):
    def main():
        raise SflnetError("--data nowhere is not a folder")
    assert run_script(main) == 1
    assert capsys.readouterr().err == "Error: --data nowhere is not a folder\n"


def test_run_script_interrupted_gives_130_and_its_message(capsys):
    def main():
        raise KeyboardInterrupt
    assert run_script(main, "Interrupted: start the same command again to resume.") == 130
    assert capsys.readouterr().err == "Interrupted: start the same command again to resume.\n"


@pytest.mark.parametrize("status", [None, 0, 3])
def test_run_script_passes_main_s_status_on(status, capsys):
    assert run_script(lambda: status) == status
    assert capsys.readouterr().err == ""


def test_run_script_leaves_a_bug_a_traceback():
    def main():
        raise ZeroDivisionError("a bug, not a user error")
    with pytest.raises(ZeroDivisionError):
        run_script(main)


def _run(script, *args, cwd):
    return subprocess.run([sys.executable, str(VALIDATION / script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("script,args,message", [
    ("behaviour_digest.py", ["--check", "missing.json"], "Error: --check missing.json: cannot read digests"),
    ("behaviour_digest.py", ["--check", "list.json"], "Error: --check list.json: not a digest file"),
    ("bench.py", ["--willow", "no_such_folder", "--no-torch"], "Error: --willow no_such_folder is not a folder"),
    ("vae_speed.py", ["--repeat", "0"], "Error: --repeat must be >= 1, got 0"),
    ("vae_table.py", ["--batch-size", "0", "--table-only"], "Error: --batch-size must be >= 1, got 0"),
])
def test_a_bad_input_ends_the_script_at_once_in_one_line(tmp_path, script, args, message):
    (tmp_path / "list.json").write_text("[1, 2]\n")
    done = _run(script, *args, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""       # nothing ran before the check


def test_every_script_that_takes_input_ends_through_run_script():
    """A script added later gets the same ending (the walkthrough returns its values for its test and
    takes no paths; import_cycles reads only the source; gradcheck is the CLI's own command)."""
    exempt = {"walkthrough.py", "import_cycles.py", "gradcheck.py"}
    for path in sorted(VALIDATION.glob("*.py")):
        if path.name in exempt:
            continue
        ending = path.read_text(encoding="utf-8").split('if __name__ == "__main__":')[-1]
        assert "run_script(main" in ending, path.name
