"""The C2M commands' bad input: a clear line and exit 2, never a traceback."""

import hashlib
import re

from shopfloor.cli import main


def test_token_prints_the_config_entry_of_its_hash(tmp_path, capsys):
    out = tmp_path / "token"
    assert main(["token", "--name", "acme", "--out", str(out)]) == 0
    digest = hashlib.sha256(out.read_text().strip().encode()).hexdigest()
    assert f"- {{name: acme, sha256: {digest}}}" in capsys.readouterr().out
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_token_into_a_folder_that_does_not_exist_is_one_clear_line(tmp_path, capsys):
    assert main(["token", "--out", str(tmp_path / "no" / "such" / "dir" / "token")]) == 2
    err = capsys.readouterr().err
    assert re.match(r"shopfloor token: cannot write .*token: No such file or directory", err)


def test_platform_simulator_without_a_readable_secret_is_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["simulate", "platform", "--port", "0", "--secret-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shopfloor simulate platform:") and str(missing) in err
