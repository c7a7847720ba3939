"""The audit log: every installer command leaves one hash-chained line; tampering is named.

The chain is tested on a real log in a tmp state directory, the hook through real click commands
(a synthetic verb wrapped exactly as installer/cli.py wraps every verb, and the real installer
verbs once they exist), and the ``installer audit`` CLI through click's runner and a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgebundle.clikit import handle_errors
from edgebundle.errors import VerificationError
from edgebundle.signing import generate_keypair
from installer import audit
from installer.audit import GENESIS, AuditLog, line_hash
from installer.cli import main as installer_main
from installer.commands.common import site_options
from installer.site import Site

REPO = Path(__file__).resolve().parents[1]


def _fill(log: AuditLog, n: int) -> list[bytes]:
    for i in range(n):
        log.append({"command": f"cmd{i}", "outcome": "ok"})
    return log.path.read_bytes().splitlines(keepends=True)


def _problems(log: AuditLog, lines: list[bytes]) -> list[tuple[int, str]]:
    log.path.write_bytes(b"".join(lines))
    return [(p.line, p.kind) for p in log.verify().problems]


def test_chain_links_each_line_to_the_one_before(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    lines = _fill(log, 4)
    recs = [json.loads(x) for x in lines]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["prev"] == GENESIS
    for a, b in zip(lines, recs[1:]):
        assert b["prev"] == line_hash(a.rstrip(b"\n"))
    head = log.head()
    assert head is not None and (head.count, head.hash, head.size) == (
        4, line_hash(lines[-1].rstrip(b"\n")), log.path.stat().st_size)
    report = log.verify()
    assert report.ok and report.lines == 4 and not report.notes


@pytest.mark.parametrize("case, expected", [
    ("edit-middle", [(3, "edited")]),
    ("edit-first", [(1, "edited")]),
    ("edit-last", [(6, "edited")]),
    ("garbage-middle", [(3, "malformed")]),
    ("remove-middle", [(3, "removed")]),
    ("remove-first", [(1, "removed")]),
    ("remove-last", [(6, "removed")]),
    ("remove-last-two", [(5, "removed")]),
    ("swap", [(3, "reordered"), (4, "reordered"), (5, "reordered")]),
    ("duplicate", [(4, "reordered")]),
    ("move-last-to-front", [(1, "reordered"), (2, "reordered")]),
])
def test_verify_names_the_tampered_line(tmp_path: Path, case: str, expected: list[tuple[int, str]]) -> None:
    log = AuditLog(tmp_path)
    ls = _fill(log, 6)
    edited = {
        "edit-middle": ls[:2] + [ls[2].replace(b"cmd2", b"cmdX")] + ls[3:],
        "edit-first": [ls[0].replace(b'"ok"', b'"ko"')] + ls[1:],
        "edit-last": ls[:5] + [ls[5].replace(b"cmd5", b"cmdY")],
        "garbage-middle": ls[:2] + [b"not json\n"] + ls[3:],
        "remove-middle": ls[:2] + ls[3:],
        "remove-first": ls[1:],
        "remove-last": ls[:5],
        "remove-last-two": ls[:4],
        "swap": ls[:2] + [ls[3], ls[2]] + ls[4:],
        "duplicate": ls[:3] + [ls[2]] + ls[3:],
        "move-last-to-front": [ls[5]] + ls[:5],
    }[case]
    assert _problems(log, edited)[:len(expected)] == expected
    log.path.write_bytes(b"".join(ls))
    assert log.verify().ok  # the original is still fine: the checks are about content only


def test_whitespace_only_edit_is_caught(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    ls = _fill(log, 3)
    assert _problems(log, [ls[0].replace(b",", b", ", 1)] + ls[1:]) == [(1, "edited")]


def test_missing_or_edited_head_is_reported(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    _fill(log, 3)
    head = log.head_path.read_bytes()
    log.head_path.unlink()
    assert [p.kind for p in log.verify().problems] == ["anchor"]
    log.head_path.write_bytes(b"{not json")
    assert [p.kind for p in log.verify().problems] == ["anchor"]
    log.head_path.write_bytes(head)
    assert log.verify().ok


def test_torn_last_line_is_cut_by_the_next_append_and_said_so(tmp_path: Path) -> None:
    """A power cut mid-write leaves a line without newline: a note, then repaired on record."""
    log = AuditLog(tmp_path)
    _fill(log, 2)
    with open(log.path, "ab") as f:
        f.write(b'{"command":"load","out')
    report = log.verify()
    assert report.ok and any("incomplete" in n for n in report.notes)
    rec = log.append({"command": "stage"})
    assert rec["seq"] == 3 and "torn final line of 22 bytes" in rec["repaired"]
    report = log.verify()
    assert report.ok and report.lines == 3 and not report.notes


def test_crash_between_append_and_head_update_is_accepted(tmp_path: Path) -> None:
    """The line is fsynced before the head moves: a log one line ahead is genuine."""
    log = AuditLog(tmp_path)
    _fill(log, 2)
    old_head = log.head_path.read_bytes()
    log.append({"command": "load"})
    log.head_path.write_bytes(old_head)  # as if killed before the head update
    report = log.verify()
    assert report.ok and report.notes and "after the last anchored" in report.notes[0]
    rec = log.append({"command": "stage"})
    assert "anomaly" not in rec and rec["seq"] == 4
    assert log.verify().ok and not log.verify().notes


def test_truncation_is_recorded_in_the_chain_even_after_reanchoring(tmp_path: Path) -> None:
    """Cutting lines then running another command must not launder the evidence."""
    log = AuditLog(tmp_path)
    ls = _fill(log, 5)
    log.path.write_bytes(b"".join(ls[:2]))
    rec = log.append({"command": "load"})
    assert rec["seq"] == 3 and "audit.head recorded 5 lines" in rec["anomaly"]
    problems = log.verify().problems
    assert [(p.line, p.kind) for p in problems] == [(3, "anomaly")]


def test_concurrent_appends_stay_one_chain(tmp_path: Path) -> None:
    """Two installers appending at once (flock): every line present, one unbroken chain."""
    code = ("import sys; from pathlib import Path; from installer.audit import AuditLog\n"
            "log = AuditLog(Path(sys.argv[1]))\n"
            "for i in range(40): log.append({'command': sys.argv[2] + str(i)})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag], cwd=REPO)
             for tag in ("a", "b", "c")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    log = AuditLog(tmp_path)
    report = log.verify()
    assert report.ok and report.lines == 120
    assert sorted(r["command"] for _, r in log.records() if r) == sorted(
        f"{t}{i}" for t in "abc" for i in range(40))


# --- the hook ----------------------------------------------------------------------------------

def _site(tmp_path: Path) -> Path:
    _, pub = generate_keypair("release", tmp_path / "keys")
    site = tmp_path / "site.yaml"
    site.write_text(
        "apiVersion: edgebundle/v1\nkind: Site\nmetadata: {name: test-site}\n"
        f"spec:\n  compatible: rag-edge/x86_64\n  trust: {{keys: [{pub}]}}\n"
        "  registry: {address: '127.0.0.1:1', plainHTTP: true}\n"
        f"  models: {{root: {tmp_path / 'nas'}}}\n  stateDir: {tmp_path / 'state'}\n")
    return site


def _synthetic_group() -> click.Group:
    """A verb built like the installer's (site options, handle_errors), wrapped by the hook."""
    @click.command("probe")
    @click.argument("bundle", type=click.Path(path_type=Path))
    @site_options
    @click.option("--fail", type=click.Choice(["none", "verify", "bug"]), default="none")
    @click.option("--operator", default=None)
    @handle_errors
    def probe(bundle: Path, site: Site, fail: str, operator: str | None) -> None:
        audit.note(plan="sha256:" + "ab" * 32)
        if fail == "verify":
            raise VerificationError("blobs/sha256/00: content digest does not match")
        if fail == "bug":
            raise RuntimeError("unexpected")
        audit.note(bundle="sha256:" + "cd" * 32)
        click.echo("done")

    group = click.Group("installer")
    audit.audited(probe)
    group.add_command(probe)
    return group


def test_hook_records_success_refusal_and_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = _site(tmp_path)
    monkeypatch.setenv("EDGEBUNDLE_OPERATOR", "alice")
    group, runner = _synthetic_group(), CliRunner()
    ok = runner.invoke(group, ["probe", "b.tar", "--site", str(site)])
    assert ok.exit_code == 0 and ok.output.strip() == "done"
    bad = runner.invoke(group, ["probe", "b.tar", "--site", str(site), "--fail", "verify",
                                "--operator", "bob"])
    assert bad.exit_code == 4 and "content digest does not match" in bad.output
    bug = runner.invoke(group, ["probe", "b.tar", "--site", str(site), "--fail", "bug"])
    assert bug.exit_code == 1 and isinstance(bug.exception, RuntimeError)
    log = AuditLog(tmp_path / "state")
    recs = [r for _, r in log.records()]
    assert [(r["command"], r["outcome"], r["exitCode"], r["operator"]) for r in recs] == [
        ("probe", "ok", 0, "alice"), ("probe", "refused", 4, "bob"), ("probe", "crash", 1, "alice")]
    assert recs[0]["bundle"] == "sha256:" + "cd" * 32 and recs[0]["bundleVerified"] is True
    assert recs[1]["bundle"] is None and recs[1]["bundleVerified"] is False
    assert recs[1]["error"] == {"kind": "VerificationError",
                                "message": "blobs/sha256/00: content digest does not match"}
    assert recs[2]["error"]["kind"] == "RuntimeError"
    assert all(r["plan"] == "sha256:" + "ab" * 32 for r in recs)
    assert recs[0]["params"]["bundle"] == "b.tar" and recs[0]["params"]["site_path"] == str(site)
    assert log.verify().ok


def test_hook_honours_state_dir_override_and_unwritable_log(tmp_path: Path) -> None:
    site = _site(tmp_path)
    group, runner = _synthetic_group(), CliRunner()
    other = tmp_path / "other-state"
    assert runner.invoke(group, ["probe", "b", "--site", str(site), "--state-dir", str(other)]).exit_code == 0
    assert AuditLog(other).verify().lines == 1 and not (tmp_path / "state").exists()
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the state directory should be")
    res = runner.invoke(group, ["probe", "b", "--site", str(site), "--state-dir", str(blocker)])
    assert res.exit_code == 1 and "could not append to the audit log" in res.output


# --- the CLI -----------------------------------------------------------------------------------

def test_audit_cli_verify_and_show(tmp_path: Path) -> None:
    site = _site(tmp_path)
    group, runner = _synthetic_group(), CliRunner()
    for fail in ("none", "verify", "none"):
        runner.invoke(group, ["probe", "b.tar", "--site", str(site), "--fail", fail])
    ok = runner.invoke(installer_main, ["audit", "verify", "--site", str(site)])
    assert ok.exit_code == 0 and "OK: 3 line(s)" in ok.output
    shown = runner.invoke(installer_main, ["audit", "show", "--site", str(site)])
    assert shown.exit_code == 0
    rows = shown.output.splitlines()
    assert rows[0].split()[0] == "1" and "probe" in rows[0] and "ok" in rows[0]
    assert "VerificationError: blobs/sha256/00: content digest does not match" in shown.output
    as_json = json.loads(runner.invoke(installer_main, ["audit", "show", "--state-dir",
                                                        str(tmp_path / "state"), "--json"]).output)
    assert [r["outcome"] for r in as_json] == ["ok", "refused", "ok"]
    head = runner.invoke(installer_main, ["audit", "show", "--site", str(site), "--head"]).output.split()
    assert head[0] == "3" and head[1] == AuditLog(tmp_path / "state").head().hash  # type: ignore[union-attr]
    # the audit verbs themselves leave no line
    assert AuditLog(tmp_path / "state").verify().lines == 3

    log = AuditLog(tmp_path / "state")
    ls = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(ls[0] + ls[1].replace(b"refused", b"ok") + ls[2])
    bad = runner.invoke(installer_main, ["audit", "verify", "--site", str(site)])
    assert bad.exit_code == 4
    assert "line 2 (seq 2) was edited" in bad.output
    as_json = json.loads(runner.invoke(installer_main, ["audit", "verify", "--site", str(site), "--json"]).output)
    assert as_json["problems"][0]["line"] == 2 and as_json["problems"][0]["kind"] == "edited"


def test_audit_cli_as_a_real_process(tmp_path: Path) -> None:
    """The console entry point, as a technician runs it: usage error without a state dir."""
    site = _site(tmp_path)
    AuditLog(tmp_path / "state").append({"command": "verify", "outcome": "ok"})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "installer.cli"]
    if not (REPO / "installer" / "__main__.py").exists():
        run = [sys.executable, "-c", "from installer.cli import main; main()"]
    ok = subprocess.run([*run, "audit", "verify", "--site", str(site)], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    usage = subprocess.run([*run, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "--site SITE.yaml or --state-dir DIR" in usage.stderr
